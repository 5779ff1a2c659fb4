"""The task queue seam. ``ingest/runner.py``'s ``LocalJobRunner`` is the embedded implementation (it polls the
job store in this process); ``rabbitmq.py`` publishes jobs to RabbitMQ for ``ragserve worker`` processes."""

from __future__ import annotations

from typing import Protocol


class TaskQueue(Protocol):
    async def start(self) -> None:
        """Begin moving work (and consuming it, where this process does)."""
        ...

    def notify(self) -> None:
        """A job was just committed: move it now rather than at the next poll."""
        ...

    async def stop(self) -> None:
        """Stop after the work in progress is written."""
        ...

    async def wait_idle(self, timeout_seconds: float = 600.0) -> None:
        """Wait until no document is pending or running (CLI and tests)."""
        ...
