"""Store settings: the backend is chosen explicitly, and a PostgreSQL backend without a URL fails at start-up
naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragserve.service import index_precisions
from ragserve.settings import Settings


def test_the_embedded_backend_is_the_default() -> None:
    store = Settings().store
    assert (store.backend, store.postgres_url, store.postgres_read_urls, store.vector_precision) == (
        "sqlite",
        None,
        [],
        "f32",
    )


def test_postgres_without_a_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match=r"store\.postgres_url is not set \(RAGSERVE_STORE__POSTGRES_URL\)"):
        Settings(store={"backend": "postgres"})  # type: ignore[arg-type]


def test_postgres_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSERVE_STORE__BACKEND", "postgres")
    monkeypatch.setenv("RAGSERVE_STORE__POSTGRES_URL", "postgresql://app:secret@db/rag")
    monkeypatch.setenv("RAGSERVE_STORE__POSTGRES_READ_URLS", '["postgresql://app:secret@replica/rag"]')
    monkeypatch.setenv("RAGSERVE_STORE__VECTOR_PRECISION", "binary")
    store = Settings().store
    assert store.postgres_url is not None
    assert store.postgres_url.get_secret_value() == "postgresql://app:secret@db/rag"
    assert "secret" not in repr(store)  # URLs carry passwords
    assert [u.get_secret_value() for u in store.postgres_read_urls] == ["postgresql://app:secret@replica/rag"]
    assert store.vector_precision == "binary"


def test_a_pool_smaller_than_its_minimum_is_refused() -> None:
    with pytest.raises(ValidationError, match="pool_min_size"):
        Settings(store={"pool_min_size": 5, "pool_max_size": 2})  # type: ignore[arg-type]


def testindex_precisions_follow_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert index_precisions(Settings()) == ("f32", "f16", "int8", "binary")
    monkeypatch.setenv("RAGSERVE_VECTOR_INDEX__PRECISION", "int8")
    assert index_precisions(Settings())[0] == "int8"  # new collections' version 1
    with pytest.raises(ValidationError, match="precision"):
        Settings(vector_index={"precision": "int4"})  # type: ignore[arg-type]
    # PostgreSQL has one pgvector index for all chunks: its versions can only have its precision.
    pg = Settings(store={"backend": "postgres", "postgres_url": "postgresql://db/rag", "vector_precision": "binary"})  # type: ignore[arg-type]
    assert index_precisions(pg) == ("binary",)
