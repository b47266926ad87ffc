"""Add the hook outbox, and key Stripe events by endpoint and id.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_payloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_payloads")),
    )
    op.create_table(
        "hook_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payload_id", sa.Integer(), nullable=False),
        sa.Column("hook", sa.String(length=255), nullable=False),
        sa.Column("callback", sa.String(length=255), nullable=False),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payload_id"],
            ["hook_payloads.id"],
            name=op.f("fk_hook_runs_payload_id_hook_payloads"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_runs")),
    )
    with op.batch_alter_table("hook_runs", schema=None) as batch_op:
        batch_op.create_index("ix_hook_runs_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_hook_runs_payload_id"), ["payload_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_hook_runs_stripe_event_id"), ["stripe_event_id"], unique=False
        )

    op.create_table(
        "hook_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["hook_runs.id"],
            name=op.f("fk_hook_attempts_run_id_hook_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_attempts")),
        sa.UniqueConstraint("run_id", "attempt", name=op.f("uq_hook_attempts_run_id")),
    )

    # Existing rows all came to the main endpoint and keep `endpoint = 'main'`.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("pk_stripe_events"), type_="primary")
        batch_op.create_primary_key(batch_op.f("pk_stripe_events"), ["id", "endpoint"])


def downgrade() -> None:
    # Fails with a duplicate key once one event id was received at two endpoints.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("pk_stripe_events"), type_="primary")
        batch_op.create_primary_key(batch_op.f("pk_stripe_events"), ["id"])

    op.drop_table("hook_attempts")
    with op.batch_alter_table("hook_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hook_runs_stripe_event_id"))
        batch_op.drop_index(batch_op.f("ix_hook_runs_payload_id"))
        batch_op.drop_index("ix_hook_runs_due")
    op.drop_table("hook_runs")
    op.drop_table("hook_payloads")
