"""Contract tests of ``ApiKeyStore`` and the authenticator over it, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ragserve.domain import ApiKey
from ragserve.errors import AuthenticationError, InvalidRequestError, NotFoundError, PermissionDeniedError
from ragserve.security.auth import Authenticator, check_scope, create_key
from ragserve.security.keys import hash_key
from ragserve.settings_security import AuthSettings
from ragserve.stores.protocol import ApiKeyStore
from ragserve.stores.sqlite_db import SqliteDatabase
from ragserve.stores.sqlite_keys import SqliteApiKeys

PEPPER = b"test-pepper"


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ApiKeyStore, Callable[[], None]]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    return SqliteApiKeys(db), db.close


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ApiKeyStore, Callable[[], None]]:
    from ragserve.stores.postgres_db import PostgresDatabase, VectorIndexSpec, migrate
    from ragserve.stores.postgres_keys import PostgresApiKeys

    url = request.getfixturevalue("postgres_url")
    migrate(url, VectorIndexSpec(dimension=4))
    db = PostgresDatabase(url)
    return PostgresApiKeys(db), db.close


KEY_BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(KEY_BACKENDS))
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiKeyStore]:
    store, close = KEY_BACKENDS[request.param](request, tmp_path)
    yield store
    close()


def test_keys_are_stored_hashed_listed_by_tenant_and_revoked(keys: ApiKeyStore) -> None:
    secret, key = create_key(keys, PEPPER, "ci", "acme", ["query", "ingest"], None)
    assert secret.startswith(f"rsk_{key.id}_")
    stored, digest = keys.get_key(key.id) or (None, "")
    assert stored == key
    assert digest == hash_key(secret, PEPPER)
    assert secret not in digest
    create_key(keys, PEPPER, "other", "globex", ["admin"], 30)
    assert [k.id for k in keys.list_keys("acme")] == [key.id]
    assert len(keys.list_keys(None)) == 2
    with pytest.raises(NotFoundError):
        keys.revoke_key(key.id, "globex")  # another tenant's key
    revoked = keys.revoke_key(key.id, "acme")
    assert revoked.revoked_at is not None
    assert keys.revoke_key(key.id, None).revoked_at == revoked.revoked_at
    with pytest.raises(NotFoundError):
        keys.revoke_key("000000000000", None)


def test_bad_key_requests_are_refused(keys: ApiKeyStore) -> None:
    with pytest.raises(InvalidRequestError):
        create_key(keys, PEPPER, "x", "acme", ["superuser"], None)
    with pytest.raises(InvalidRequestError):
        create_key(keys, PEPPER, "x", "acme", [], None)
    with pytest.raises(InvalidRequestError):
        create_key(keys, PEPPER, "x", " ", ["query"], None)


def test_the_authenticator_accepts_only_live_keys_with_the_right_secret(keys: ApiKeyStore) -> None:
    auth = Authenticator(AuthSettings(key_cache_seconds=0), True, keys, PEPPER)
    secret, key = create_key(keys, PEPPER, "ci", "acme", ["query"], None)
    principal = auth.authenticate(f"Bearer {secret}")
    assert (principal.tenant, principal.scopes, principal.key_id, principal.label) == (
        "acme",
        frozenset({"query"}),
        key.id,
        key.id,
    )
    check_scope(principal, "query")
    with pytest.raises(PermissionDeniedError):
        check_scope(principal, "ingest")
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    for header in (None, "", "Basic abc", "Bearer", f"Bearer {forged}", "Bearer rsk_nope", "Bearer eyJhbGciOi.x.y"):
        with pytest.raises(AuthenticationError):
            auth.authenticate(header)
    keys.revoke_key(key.id, None)
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.authenticate(f"Bearer {secret}")


def test_expired_keys_are_refused(keys: ApiKeyStore) -> None:
    auth = Authenticator(AuthSettings(key_cache_seconds=0), True, keys, PEPPER)
    secret = "rsk_0123456789ab_" + "x" * 43
    past = datetime.now(UTC) - timedelta(days=2)
    keys.create_key(
        ApiKey("0123456789ab", "old", "acme", ("query",), past, expires_at=past + timedelta(days=1)),
        hash_key(secret, PEPPER),
    )
    with pytest.raises(AuthenticationError, match="expired"):
        auth.authenticate(f"Bearer {secret}")


def test_a_revoked_key_is_forgotten_by_the_cache_of_the_server_that_revoked_it(keys: ApiKeyStore) -> None:
    auth = Authenticator(AuthSettings(key_cache_seconds=60), True, keys, PEPPER)
    secret, key = create_key(keys, PEPPER, "ci", "acme", ["query"], None)
    auth.authenticate(f"Bearer {secret}")
    keys.revoke_key(key.id, None)
    auth.authenticate(f"Bearer {secret}")  # still trusted from the cache
    auth.forget(key.id)
    with pytest.raises(AuthenticationError):
        auth.authenticate(f"Bearer {secret}")
