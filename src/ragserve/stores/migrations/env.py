"""Alembic's environment for ragserve's PostgreSQL schema. There is no alembic.ini: ``postgres_db.migrate``
builds the configuration and passes the connection it holds the migration lock on in
``config.attributes["connection"]``, and the embedding dimension in ``config.attributes["vector_dimension"]``."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
