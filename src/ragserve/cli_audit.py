"""``ragserve audit ...``: the audit log, read on the server's machine straight from its database (every
tenant's events; the server may keep running)."""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragserve.errors import RagserveError
from ragserve.security.audit import AuditEvent, AuditFilters, Auditor, DetailValue
from ragserve.settings import Settings
from ragserve.stores.factory import open_audit_log

app = typer.Typer(help="The audit log of admin actions and ingestion.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events (default: every tenant's)")] = None,
    action: Annotated[str | None, typer.Option(help="an action (key.create) or a prefix (index.*)")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601: events at or after this time (UTC unless it says)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List audit events, newest first."""
    try:
        since_time = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not an ISO 8601 time", param_hint="--since") from None
    try:
        log, close = open_audit_log(Settings())
        try:
            events = log.list_events(tenant, AuditFilters(action, since_time), limit)
        finally:
            close()
    except RagserveError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    if as_json:
        for event in events:
            typer.echo(json.dumps(event.to_log(), ensure_ascii=False))
        return
    table = Table("id", "time", "tenant", "who", "action", "outcome", "target", "details")
    for event in events:
        table.add_row(
            str(event.id),
            event.occurred_at.isoformat(timespec="seconds"),
            escape(event.tenant),
            escape(event.subject),
            event.action,
            event.outcome,
            escape(event.target or ""),
            escape(" ".join(f"{k}={v}" for k, v in event.details.items())),
        )
    console.print(table)


def record_cli_action(settings: Settings, action: str, tenant: str, target: str, **details: DetailValue) -> None:
    """Record an action taken with the command line (by the operating-system user running it). The action is
    done: a log that cannot be opened gets a warning, not an error."""
    try:
        log, close = open_audit_log(settings)
    except RagserveError as exc:
        console.print(f"[yellow]warning:[/yellow] the action was not recorded in the audit log: {escape(exc.message)}")
        return
    try:
        Auditor(log).record(
            AuditEvent(action=action, tenant=tenant, subject=f"cli:{_user()}", target=target, details=details)
        )
    finally:
        close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's arbitrary uid has no name
        return f"uid-{os.getuid()}"
