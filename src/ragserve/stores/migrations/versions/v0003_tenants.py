"""Tenants and document ACLs (the SQLite store's schema 6): a collection's name is unique within its tenant,
documents carry an ACL, jobs their tenant, API keys the user and groups they act for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE collections ADD COLUMN tenant text NOT NULL DEFAULT 'default';
        ALTER TABLE collections DROP CONSTRAINT collections_name_key;
        ALTER TABLE collections ADD CONSTRAINT collections_tenant_name_key UNIQUE (tenant, name);
        ALTER TABLE documents ADD COLUMN acl jsonb;
        ALTER TABLE documents ADD COLUMN restricted boolean NOT NULL DEFAULT false;
        CREATE INDEX documents_restricted ON documents(collection_id) WHERE restricted;
        ALTER TABLE jobs ADD COLUMN tenant text NOT NULL DEFAULT 'default';
        ALTER TABLE api_keys ADD COLUMN user_name text;
        ALTER TABLE api_keys ADD COLUMN groups jsonb NOT NULL DEFAULT '[]'::jsonb;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE api_keys DROP COLUMN groups;
        ALTER TABLE api_keys DROP COLUMN user_name;
        ALTER TABLE jobs DROP COLUMN tenant;
        DROP INDEX documents_restricted;
        ALTER TABLE documents DROP COLUMN restricted;
        ALTER TABLE documents DROP COLUMN acl;
        ALTER TABLE collections DROP CONSTRAINT collections_tenant_name_key;
        ALTER TABLE collections DROP COLUMN tenant;
        ALTER TABLE collections ADD CONSTRAINT collections_name_key UNIQUE (name);
        """
    )
