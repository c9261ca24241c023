"""The four ChatKit tables: threads, items, attachments and feedback.

Creates exactly the schema of ``flask_chatkit.sqlalchemy_schema.define_models``
with the default table prefix ``chatkit_``.

Revision ID: chatkit_0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "chatkit_0001_initial"
down_revision = None
branch_labels = ("chatkit",)
depends_on = None

Id = sa.String(length=255)


def _pk() -> sa.Column[int]:
    return sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "chatkit_threads",
        _pk(),
        sa.Column("id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("agent_id", Id, nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("turn_token", sa.String(length=64), nullable=True),
        sa.Column("turn_expires_at", sa.DateTime(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id", name="uq_chatkit_threads_id"),
    )
    op.create_index(
        "ix_chatkit_threads_user_created", "chatkit_threads", ["user_id", "created_at", "pk"]
    )
    op.create_index(
        "ix_chatkit_threads_user_agent_created",
        "chatkit_threads",
        ["user_id", "agent_id", "created_at", "pk"],
    )

    op.create_table(
        "chatkit_items",
        _pk(),
        sa.Column("id", Id, nullable=False),
        sa.Column("thread_id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id", name="uq_chatkit_items_id"),
    )
    op.create_index(
        "ix_chatkit_items_thread_created", "chatkit_items", ["thread_id", "created_at", "pk"]
    )
    op.create_index("ix_chatkit_items_user_created", "chatkit_items", ["user_id", "created_at"])

    op.create_table(
        "chatkit_attachments",
        _pk(),
        sa.Column("id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("thread_id", Id, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id", name="uq_chatkit_attachments_id"),
    )
    op.create_index(
        "ix_chatkit_attachments_user_created", "chatkit_attachments", ["user_id", "created_at"]
    )
    op.create_index("ix_chatkit_attachments_thread", "chatkit_attachments", ["thread_id"])
    op.create_index("ix_chatkit_attachments_created", "chatkit_attachments", ["created_at"])

    op.create_table(
        "chatkit_feedback",
        _pk(),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("thread_id", Id, nullable=False),
        sa.Column("item_id", Id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("user_id", "thread_id", "item_id", name="uq_chatkit_feedback_vote"),
    )
    op.create_index("ix_chatkit_feedback_thread", "chatkit_feedback", ["thread_id"])
    op.create_index("ix_chatkit_feedback_created", "chatkit_feedback", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_chatkit_feedback_created", table_name="chatkit_feedback")
    op.drop_index("ix_chatkit_feedback_thread", table_name="chatkit_feedback")
    op.drop_table("chatkit_feedback")

    op.drop_index("ix_chatkit_attachments_created", table_name="chatkit_attachments")
    op.drop_index("ix_chatkit_attachments_thread", table_name="chatkit_attachments")
    op.drop_index("ix_chatkit_attachments_user_created", table_name="chatkit_attachments")
    op.drop_table("chatkit_attachments")

    op.drop_index("ix_chatkit_items_user_created", table_name="chatkit_items")
    op.drop_index("ix_chatkit_items_thread_created", table_name="chatkit_items")
    op.drop_table("chatkit_items")

    op.drop_index("ix_chatkit_threads_user_agent_created", table_name="chatkit_threads")
    op.drop_index("ix_chatkit_threads_user_created", table_name="chatkit_threads")
    op.drop_table("chatkit_threads")
