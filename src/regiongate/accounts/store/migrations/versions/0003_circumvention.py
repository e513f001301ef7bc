"""Circumvention: what a request hinted (``rg_events.detail``) and the review queue.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_ONE_OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    # A constant server default: SQLite adds the column in place, PostgreSQL (11+) without
    # rewriting the table, so this is quick even with many events.
    op.add_column(
        "rg_events", sa.Column("detail", sa.String(400), nullable=False, server_default="")
    )
    op.create_table(
        "rg_reviews",
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
    )
    op.create_index("rg_reviews_status_opened", "rg_reviews", ["status", "opened_at"])
    op.create_index("ix_rg_reviews_org", "rg_reviews", ["org"])
    # At most one open review per organisation (the store relies on it against races).
    op.create_index(
        "rg_reviews_one_open",
        "rg_reviews",
        ["org"],
        unique=True,
        postgresql_where=_ONE_OPEN,
        sqlite_where=_ONE_OPEN,
    )


def downgrade() -> None:
    op.drop_index("rg_reviews_one_open", table_name="rg_reviews")
    op.drop_index("ix_rg_reviews_org", table_name="rg_reviews")
    op.drop_index("rg_reviews_status_opened", table_name="rg_reviews")
    op.drop_table("rg_reviews")
    op.drop_column("rg_events", "detail")  # SQLite 3.35+ drops a column in place
