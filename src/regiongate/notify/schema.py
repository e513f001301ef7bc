"""The notice tables (SQLAlchemy Core), created by migration 0002 next to the accounts'."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["campaigns", "deliveries", "metadata"]

metadata = sa.MetaData()

campaigns = sa.Table(
    "rg_notice_campaigns",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("policy", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("enforce_from", sa.Float, nullable=False),
    sa.Column("template", sa.String(100), nullable=False),
    sa.Column("language", sa.String(20), nullable=False),
    sa.Column("params", sa.Text, nullable=False, server_default="{}"),
)

deliveries = sa.Table(
    "rg_notice_deliveries",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("campaign", sa.String(200), sa.ForeignKey("rg_notice_campaigns.id"), nullable=False),
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
    sa.UniqueConstraint("campaign", "org", "channel", name="rg_notice_deliveries_once"),
    sa.Index("rg_notice_deliveries_work", "campaign", "status"),
)
