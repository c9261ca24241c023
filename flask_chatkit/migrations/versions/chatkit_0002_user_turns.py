"""An index for counting a user's running turns (``CHATKIT_MAX_TURNS_PER_USER``).

Revision ID: chatkit_0002_user_turns
Revises: chatkit_0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "chatkit_0002_user_turns"
down_revision = "chatkit_0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_chatkit_threads_user_turn", "chatkit_threads", ["user_id", "turn_expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_chatkit_threads_user_turn", table_name="chatkit_threads")
