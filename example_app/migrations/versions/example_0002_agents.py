"""agents

Each user's agents (a name and instructions); users that exist already get
the two starter agents that new users get.

Revision ID: example_0002_agents
Revises: example_0001_users
Create Date: 2026-11-29 10:12:03.118402

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "example_0002_agents"
down_revision = "example_0001_users"
branch_labels = None
depends_on = None

#: The starter agents as of this revision (models.DEFAULT_AGENTS may change later).
STARTER_AGENTS = (
    (
        "Helper",
        "Concise and friendly: answers in a few clear sentences.\n"
        "Prefer plain language and offer one next step when it helps.",
    ),
    (
        "Pirate",
        "Answers like a pirate, matey: salty words, still helpful.\n"
        'Start every answer with "Arr!" and keep it short.',
    ),
)


def upgrade():
    op.create_table(
        "example_agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("example_agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_example_agents_user_id"), ["user_id"], unique=False)

    for name, instructions in STARTER_AGENTS:
        op.execute(
            sa.text(
                "INSERT INTO example_agents (user_id, name, instructions, created_at) "
                "SELECT id, :name, :instructions, CURRENT_TIMESTAMP FROM users ORDER BY id"
            ).bindparams(name=name, instructions=instructions)
        )


def downgrade():
    with op.batch_alter_table("example_agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_example_agents_user_id"))

    op.drop_table("example_agents")
