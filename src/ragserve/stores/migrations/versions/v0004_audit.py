"""The audit log (the SQLite store creates the same table when it opens).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            occurred_at timestamptz NOT NULL,
            tenant text NOT NULL,
            subject text NOT NULL,
            key_id text,
            action text NOT NULL,
            target text,
            outcome text NOT NULL,
            request_id text,
            client_ip text,
            details jsonb NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_events_tenant ON audit_events(tenant, occurred_at DESC);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS audit_events")
