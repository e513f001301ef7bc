"""Offline analysis of API traffic: log replay against a policy, and synthetic logs."""
