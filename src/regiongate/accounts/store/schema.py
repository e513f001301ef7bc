"""The SQL schema (SQLAlchemy Core). Alembic migrations create it; this module names it."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["audit", "events", "keys", "metadata", "orgs", "payments", "reviews"]

metadata = sa.MetaData()

orgs = sa.Table(
    "rg_orgs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(500), nullable=False, server_default=""),
    sa.Column("email", sa.String(500)),
    sa.Column("state", sa.String(20), nullable=False, server_default="active"),
    sa.Column("state_since", sa.Float, nullable=False, server_default="0"),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
)

keys = sa.Table(
    "rg_keys",
    metadata,
    sa.Column("key_id", sa.String(100), primary_key=True),
    sa.Column("org", sa.String(200), sa.ForeignKey("rg_orgs.id"), nullable=False, index=True),
    sa.Column("label", sa.String(500), nullable=False, server_default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
)

events = sa.Table(
    "rg_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org", sa.String(200), nullable=False),
    sa.Column("key_id", sa.String(100), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("territory", sa.String(10)),
    sa.Column("flags", sa.String(200), nullable=False, server_default=""),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("rule", sa.String(40), nullable=False, server_default=""),
    sa.Column("strike", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("detail", sa.String(400), nullable=False, server_default=""),
    sa.Index(
        "rg_events_strikes",
        "org",
        "at",
        postgresql_where=sa.text("strike"),
        sqlite_where=sa.text("strike"),
    ),
)

payments = sa.Table(
    "rg_payments",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("org", sa.String(200), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("card_country", sa.String(10)),
    sa.Column("billing_country", sa.String(10)),
    sa.Column("method", sa.String(40), nullable=False, server_default="card"),
    sa.Column("currency", sa.String(10)),
    sa.Column("amount", sa.Float),
)

audit = sa.Table(
    "rg_audit",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("org", sa.String(200)),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("from_state", sa.String(20)),
    sa.Column("to_state", sa.String(20)),
    sa.Column("evidence", sa.Text, nullable=False, server_default="[]"),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("rg_audit_org_seq", "org", "seq"),
)

reviews = sa.Table(
    "rg_reviews",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org", sa.String(200), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False, server_default="{}"),
    sa.Column("status", sa.String(20), nullable=False, server_default="open"),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
    sa.Column("closed_by", sa.String(200)),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Index("rg_reviews_status_opened", "status", "opened_at"),
    sa.Index("ix_rg_reviews_org", "org"),
    # At most one open review per organisation, kept by the database itself: two racing
    # openers cannot both insert one (the loser updates the winner's instead).
    sa.Index(
        "rg_reviews_one_open",
        "org",
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    ),
)
