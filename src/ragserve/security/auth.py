"""Turning an ``Authorization`` header into a ``Principal``: an API key (looked up by its id, checked against
its keyed hash, expiry and revocation) or a JWT verified against the identity provider's JWKS."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from ragserve.domain import ANONYMOUS, SCOPES, Acl, ApiKey, Principal
from ragserve.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from ragserve.security.keys import hash_key, key_id_of, new_key, same_hash
from ragserve.settings import Settings
from ragserve.settings_security import AuthSettings, JwtSettings
from ragserve.stores.protocol import ApiKeyStore

logger = logging.getLogger(__name__)


def auth_required(settings: Settings) -> bool:
    """On when asked, and by default whenever the server listens beyond loopback."""
    if settings.auth.enabled is not None:
        return settings.auth.enabled
    host = settings.server.host
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def load_pepper(settings: Settings) -> bytes:
    """The configured pepper, else a random one created once in the data directory (mode 0600)."""
    if settings.auth.key_pepper is not None:
        return settings.auth.key_pepper.get_secret_value().encode()
    path = Path(settings.data_dir) / "key-pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def create_key(
    keys: ApiKeyStore,
    pepper: bytes,
    name: str,
    tenant: str,
    scopes: list[str],
    expires_days: float | None,
    user: str | None = None,
    groups: Sequence[str] = (),
) -> tuple[str, ApiKey]:
    """A new key (returned once, never stored) and its record; ``user`` and ``groups`` are who it reads as
    in document ACLs. Raises ``InvalidRequestError``."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidRequestError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    if not tenant.strip() or len(tenant) > 128:
        raise InvalidRequestError("tenant must be 1-128 characters")
    checked = Acl.of([user] if user else [], list(groups), public=False)  # the names ACLs may list
    secret, key_id = new_key()
    now = datetime.now(UTC)
    record = ApiKey(
        id=key_id,
        name=name,
        tenant=tenant,
        scopes=tuple(s for s in SCOPES if s in scopes),
        created_at=now,
        expires_at=None if expires_days is None else now + timedelta(days=expires_days),
        user=user or None,
        groups=checked.groups,
    )
    keys.create_key(record, hash_key(secret, pepper))
    return secret, record


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        assert settings.jwks_url is not None
        self._settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Principal:
        s = self._settings
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWKClientError as exc:
            raise AuthenticationError(f"the token's signing key could not be found: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"the token is not valid: {exc}") from None
        raw_scopes = claims.get(s.scopes_claim, [])
        scopes = raw_scopes.split() if isinstance(raw_scopes, str) else [str(x) for x in raw_scopes]
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise AuthenticationError(f"the token has no {s.tenant_claim!r} claim")
        groups = claims.get(s.groups_claim, [])
        return Principal(
            subject=f"jwt:{claims['sub']}",
            tenant=tenant,
            scopes=frozenset(x for x in scopes if x in SCOPES),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            user=str(claims["sub"]),
        )


class Authenticator:
    def __init__(self, settings: AuthSettings, enabled: bool, keys: ApiKeyStore, pepper: bytes) -> None:
        self.enabled = enabled
        self._keys = keys
        self.pepper = pepper
        self._cache_seconds = settings.key_cache_seconds
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self._jwt = JwtVerifier(settings.jwt) if settings.jwt.jwks_url else None

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationError("send the header 'Authorization: Bearer <API key or token>'")
        if credential.startswith("rsk_"):
            return self._api_key(credential)
        if self._jwt is not None:
            return self._jwt.verify(credential)
        raise AuthenticationError("the credentials are not a valid API key")

    def forget(self, key_id: str) -> None:
        """Stop trusting a cached verification of this key (it was revoked here)."""
        with self._lock:
            for digest, (_, principal) in list(self._verified.items()):
                if principal.key_id == key_id:
                    del self._verified[digest]

    def _api_key(self, credential: str) -> Principal:
        digest = hash_key(credential, self.pepper)
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._keys.get_key(key_id_of(credential))
        if found is None or not same_hash(found[1], digest):
            raise AuthenticationError("unknown API key")
        key = found[0]
        if key.revoked_at is not None:
            raise AuthenticationError(f"API key {key.id} was revoked")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise AuthenticationError(f"API key {key.id} expired")
        principal = Principal(
            subject=f"key:{key.id}",
            tenant=key.tenant,
            scopes=frozenset(key.scopes),
            groups=key.groups,
            key_id=key.id,
            user=key.user,
        )
        with self._lock:
            self._verified[digest] = (now + self._cache_seconds, principal)
        return principal


def check_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise PermissionDeniedError(f"this operation needs the {scope!r} scope; {principal.label} lacks it")
