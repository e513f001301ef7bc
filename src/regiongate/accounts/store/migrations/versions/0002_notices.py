"""Notices: campaigns and their deliveries (one per organisation and channel).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "rg_notice_campaigns",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("enforce_from", sa.Float, nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("language", sa.String(20), nullable=False),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "rg_notice_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "campaign", sa.String(200), sa.ForeignKey("rg_notice_campaigns.id"), nullable=False
        ),
        sa.Column("org", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("recipient", sa.String(2000), nullable=False),
        sa.Column("language", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("message_id", sa.String(300), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("next_attempt", sa.Float),
        sa.Column("claimed_by", sa.String(300)),
        sa.Column("lease_until", sa.Float),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        # Exactly one notice per (campaign, organisation, channel): re-planning inserts only
        # what is new, and no race can plan the same notice twice.
        sa.UniqueConstraint("campaign", "org", "channel", name="rg_notice_deliveries_once"),
    )
    op.create_index("rg_notice_deliveries_work", "rg_notice_deliveries", ["campaign", "status"])


def downgrade() -> None:
    op.drop_index("rg_notice_deliveries_work", table_name="rg_notice_deliveries")
    op.drop_table("rg_notice_deliveries")
    op.drop_table("rg_notice_campaigns")
