"""Accounts: who is calling (API key → organisation), what they did (events, payments), and
the sticky state that follows (warned, suspended, appeal, reinstated), with an audit log."""
