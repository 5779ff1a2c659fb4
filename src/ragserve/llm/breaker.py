"""A circuit breaker per provider, so that a dead provider costs nothing once it is known to be dead.

closed ──(failure_threshold consecutive failures)──> open ──(reset_timeout_seconds)──> half_open
half_open ──(the one probe succeeds)──> closed;  half_open ──(the probe fails)──> open
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from ragserve.observability.metrics import BREAKER_STATES, LLM_BREAKER_STATE

BreakerState = Literal["closed", "open", "half_open"]

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Counts consecutive failures of one provider. ``allow()`` says whether a request may go out now; in
    half-open state exactly one probe is let through until it reports back. Not thread-safe: one event loop.
    The state is exported as ``ragserve_llm_breaker_state{provider}``."""

    def __init__(
        self,
        provider: str,
        failure_threshold: int,
        reset_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_seconds <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_seconds > 0")
        self._provider = provider
        self._threshold = failure_threshold
        self._reset_seconds = reset_timeout_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state: BreakerState = "closed"
        self._probe_out = False
        self._export()

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker whose reset timeout has passed reads as half-open."""
        if self._state == "open" and self._clock() - self._opened_at >= self._reset_seconds:
            self._set("half_open")
        return self._state

    def allow(self) -> bool:
        """Whether a request may go out; in half-open state this claims the single probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    @property
    def is_probing(self) -> bool:
        """True while the half-open probe is out: the caller should not retry it."""
        return self._state == "half_open" and self._probe_out

    def record_success(self) -> None:
        self._failures = 0
        self._probe_out = False
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_out = False
        if self._state == "half_open" or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._set("open")
            logger.warning("circuit breaker of LLM provider %s opened for %.1f s", self._provider, self._reset_seconds)

    def release(self) -> None:
        """The request that was allowed ended with neither success nor failure (e.g. it was cancelled)."""
        self._probe_out = False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        self._export()

    def _export(self) -> None:
        LLM_BREAKER_STATE.labels(provider=self._provider).set(BREAKER_STATES[self._state])
