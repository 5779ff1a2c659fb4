"""Settings of the service's gates: authentication (API keys, JWTs), browser security (CORS, headers), the
audit log, rate limits and quotas."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, Field, SecretStr, model_validator

_ORIGIN = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/?#\s]+$")


class JwtSettings(BaseModel):
    """Bearer JWTs from an identity provider, verified against its JWKS (fetched from ``jwks_url`` and cached).
    Claims map to the principal: ``tenant_claim``, ``groups_claim``, and ``scopes_claim`` (a space-separated
    string or a list of ``query``, ``ingest``, ``admin``)."""

    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    tenant_claim: str = "tenant"
    groups_claim: str = "groups"
    scopes_claim: str = "scope"
    leeway_seconds: float = Field(default=30.0, ge=0)


class AuthSettings(BaseModel):
    """Authentication. ``enabled`` unset: on unless the server listens on loopback only; ``false`` turns it
    off anywhere (then every caller is an anonymous admin: only behind another gate)."""

    enabled: bool | None = None
    key_pepper: SecretStr | None = Field(
        default=None, description="HMAC key for stored API key hashes; unset: a random one kept in the data dir"
    )
    key_cache_seconds: float = Field(default=10.0, ge=0, description="how long a verified key is trusted")
    jwt: JwtSettings = JwtSettings()


class CorsSettings(BaseModel):
    """Cross-origin requests from browser pages of other origins (Starlette's ``CORSMiddleware``). No
    ``allow_origins``: no CORS headers at all, so browsers let only same-origin pages (the bundled UI) call the
    API. An origin is ``scheme://host[:port]`` exactly as the browser sends it, or ``*`` for any."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "PUT", "DELETE"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "content-type", "idempotency-key", "x-request-id", "traceparent"]
    )
    allow_credentials: bool = Field(default=False, description="let pages send cookies or HTTP auth")
    max_age_seconds: int = Field(default=600, ge=0, description="how long browsers may cache a preflight answer")

    @model_validator(mode="after")
    def _check_origins(self) -> CorsSettings:
        for origin in self.allow_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"cors.allow_origins: {origin!r} is not an origin (scheme://host[:port], no path or trailing /)"
                )
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("cors.allow_credentials cannot be used with cors.allow_origins '*'; list the origins")
        return self


class HeaderSettings(BaseModel):
    """Security headers. ``behind_tls``: clients reach the service over HTTPS only (itself or a TLS-terminating
    proxy), so responses carry ``Strict-Transport-Security``."""

    behind_tls: bool = False
    hsts_max_age_seconds: int = Field(default=31_536_000, ge=0)


class AuditSettings(BaseModel):
    """The audit log of admin actions and ingestion. Refused credentials and scopes (``auth.denied``) are
    recorded at most ``denied_per_minute`` times a minute per client address, so a flood of bad requests
    cannot flood the log."""

    record_denied: bool = True
    denied_per_minute: int = Field(default=60, ge=1)


class RateLimitSettings(BaseModel):
    """Token buckets per API key (or token subject) and per client IP, and per-tenant daily quotas (UTC days).
    ``enabled`` unset: on when the server listens beyond loopback (as authentication is), off on loopback, where
    one local user should not be throttled. Shared by replicas through Redis when ``redis.url`` is set (a Redis
    outage lets requests through, logged and counted), in this process otherwise. A rate of 0 turns that
    bucket off; a quota unset is unlimited. ``trusted_proxies`` (IPs or CIDRs) may name the client in
    ``X-Forwarded-For``."""

    enabled: bool | None = None
    per_key_rate: float = Field(default=20.0, ge=0, description="requests/s per API key or JWT subject; 0: none")
    per_key_burst: int = Field(default=40, ge=1, description="requests a key may make at once after a pause")
    per_ip_rate: float = Field(default=50.0, ge=0, description="requests/s per client IP (IPv6: per /64); 0: none")
    per_ip_burst: int = Field(default=100, ge=1)
    trusted_proxies: list[str] = Field(default_factory=list, description='e.g. ["10.0.0.0/8"]')
    requests_per_day: int | None = Field(default=None, ge=1, description="per tenant")
    llm_tokens_per_day: int | None = Field(default=None, ge=1, description="per tenant, prompt and completion")
    ingest_bytes_per_day: int | None = Field(default=None, ge=1, description="per tenant, documents and sync")
    stored_chunks: int | None = Field(
        default=None,
        ge=1,
        description="per tenant, chunks stored at once; checked when documents are submitted",
    )
    redis_timeout_seconds: float = Field(default=1.0, gt=0, description="a slower Redis lets the request through")
    max_local_buckets: int = Field(default=100_000, ge=100, description="in-process buckets kept at most")

    @model_validator(mode="after")
    def _check_proxies(self) -> RateLimitSettings:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"rate_limit.trusted_proxies: {proxy!r} is not an IP address or CIDR") from None
        return self
