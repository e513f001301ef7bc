"""Accounts: organisations, keys, events, payments, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "rg_orgs",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(500), nullable=False, server_default=""),
        sa.Column("email", sa.String(500)),
        sa.Column("state", sa.String(20), nullable=False, server_default="active"),
        sa.Column("state_since", sa.Float, nullable=False, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "rg_keys",
        sa.Column("key_id", sa.String(100), primary_key=True),
        sa.Column("org", sa.String(200), sa.ForeignKey("rg_orgs.id"), nullable=False),
        sa.Column("label", sa.String(500), nullable=False, server_default=""),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_rg_keys_org", "rg_keys", ["org"])
    op.create_table(
        "rg_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("org", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("territory", sa.String(10)),
        sa.Column("flags", sa.String(200), nullable=False, server_default=""),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("rule", sa.String(40), nullable=False, server_default=""),
        sa.Column("strike", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    # Only strikes are ever looked up by organisation and time: a partial index keeps the
    # (many) allowed requests out of it, which is most of the cost of ingesting them.
    op.create_index(
        "rg_events_strikes",
        "rg_events",
        ["org", "at"],
        postgresql_where=sa.text("strike"),
        sqlite_where=sa.text("strike"),
    )

    op.create_table(
        "rg_payments",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("org", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("card_country", sa.String(10)),
        sa.Column("billing_country", sa.String(10)),
        sa.Column("method", sa.String(40), nullable=False, server_default="card"),
        sa.Column("currency", sa.String(10)),
        sa.Column("amount", sa.Float),
    )
    op.create_index("ix_rg_payments_org", "rg_payments", ["org"])
    op.create_table(
        "rg_audit",
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
    )
    op.create_index("rg_audit_org_seq", "rg_audit", ["org", "seq"])


def downgrade() -> None:
    for table in ("rg_audit", "rg_payments", "rg_events", "rg_keys", "rg_orgs"):
        op.drop_table(table)
