"""``ragserve worker`` (ingestion workers consuming the broker) and ``ragserve dlq`` (dead letters, over the
HTTP API of a running server)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ragserve.cli_index import Url, call
from ragserve.errors import RagserveError
from ragserve.observability.logging import configure_logging
from ragserve.service import RagService
from ragserve.settings import Settings

console = Console()
dlq = typer.Typer(help="Dead letters: ingestion items whose retries ran out.", no_args_is_help=True)
logger = logging.getLogger(__name__)


def worker(
    threads: Annotated[int | None, typer.Option(help="messages handled at once (default queue.worker_threads)")] = None,
) -> None:
    """Consume the RabbitMQ ingestion queue until SIGTERM/SIGINT; the message in progress is finished first."""
    settings = Settings()
    configure_logging(settings.server.log_level, json_logs=settings.observability.json_logs)
    if settings.queue.backend != "rabbitmq":
        console.print("[red]error:[/red] ragserve worker needs RAGSERVE_QUEUE__BACKEND=rabbitmq")
        raise typer.Exit(2)
    if settings.store.backend == "sqlite":
        console.print(
            "[red]error:[/red] a separate worker needs a store other processes can reach: set "
            "RAGSERVE_STORE__BACKEND=postgres (with SQLite, run consumers inside the server with "
            "RAGSERVE_QUEUE__IN_PROCESS_WORKERS)"
        )
        raise typer.Exit(2)
    count = threads or settings.queue.worker_threads
    settings = settings.model_copy(update={"queue": settings.queue.model_copy(update={"in_process_workers": count})})
    if settings.queue.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.queue.worker_metrics_port)
    try:
        asyncio.run(_work(settings))
    except RagserveError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


async def _work(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = RagService.open(settings)
    try:
        await service.start(run_jobs=True)
        logger.info("worker consuming %s", settings.queue.ingest_queue)
        await stop.wait()
    finally:
        await service.close()


@dlq.command("list")
def list_(limit: Annotated[int, typer.Option(min=1, max=1000)] = 100, url: Url = "http://127.0.0.1:8000") -> None:
    """Show dead-lettered items."""
    items: list[dict[str, Any]] = call("GET", url, f"/v1/dead-letters?limit={limit}")["items"]
    table = Table("job", "item", "document", "error", "when")
    for item in items:
        error = item["error"]
        table.add_row(
            item["job_id"],
            str(item["seq"]),
            item["document_id"],
            f"{error['code']}: {error['message']}",
            item["updated_at"],
        )
    console.print(table)
    console.print(f"{len(items)} dead letters")


@dlq.command()
def requeue(
    job: Annotated[str | None, typer.Option(help="only this job's items")] = None, url: Url = "http://127.0.0.1:8000"
) -> None:
    """Put dead-lettered items back in the queue."""
    result = call("POST", url, "/v1/dead-letters/requeue", {"job_id": job})
    console.print(f"{result['requeued']} items requeued")
