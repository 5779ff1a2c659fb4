"""API keys: ``rsk_<id>_<secret>``. The id is public (it names the key in lists, logs and metrics); only a
keyed hash (HMAC-SHA256 with a server-side pepper) of the whole key is stored, so a leaked database does not
leak usable keys, and the key is shown once, when it is created."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ragserve.errors import AuthenticationError

_KEY = re.compile(r"^rsk_([0-9a-f]{12})_([A-Za-z0-9_\-]{32,64})$")


def new_key() -> tuple[str, str]:
    """A fresh key and its id."""
    key_id = secrets.token_hex(6)
    return f"rsk_{key_id}_{secrets.token_urlsafe(32)}", key_id


def key_id_of(key: str) -> str:
    """Raises ``AuthenticationError`` for anything that is not shaped like a key."""
    match = _KEY.match(key)
    if match is None:
        raise AuthenticationError("the credentials are not a valid API key or token")
    return match.group(1)


def hash_key(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
