"""``ragserve keys ...``: API keys, managed on the server's machine (straight in its database; the server may
keep running)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ragserve.cli_audit import record_cli_action
from ragserve.errors import RagserveError
from ragserve.security.auth import create_key, load_pepper
from ragserve.settings import Settings
from ragserve.stores.factory import open_key_store

app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
console = Console()


@app.command()
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")],
    scopes: Annotated[str, typer.Option(help="comma-separated: query, ingest, admin")] = "query",
    name: Annotated[str, typer.Option(help="a label, shown in lists")] = "cli",
    expires_days: Annotated[float | None, typer.Option(help="expiry in days (default: never)")] = None,
    user: Annotated[str | None, typer.Option(help="the user it reads as in document ACLs")] = None,
    groups: Annotated[str, typer.Option(help="comma-separated groups it reads as in document ACLs")] = "",
) -> None:
    """Create a key and print it: it cannot be shown again."""
    settings = Settings()
    keys, close = open_key_store(settings)
    try:
        secret, key = create_key(
            keys,
            load_pepper(settings),
            name,
            tenant,
            [s.strip() for s in scopes.split(",") if s.strip()],
            expires_days,
            user,
            [g.strip() for g in groups.split(",") if g.strip()],
        )
    except RagserveError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        close()
    typer.echo(secret)
    console.print(f"key {key.id} for tenant {key.tenant}, scopes {', '.join(key.scopes)}", style="dim")
    record_cli_action(settings, "key.create", key.tenant, f"key:{key.id}", name=key.name, scopes=",".join(key.scopes))


@app.command("list")
def list_(tenant: Annotated[str | None, typer.Option()] = None) -> None:
    """List keys (never the keys themselves)."""
    keys, close = open_key_store(Settings())
    try:
        table = Table("id", "name", "tenant", "scopes", "user", "groups", "created", "expires", "revoked")
        for key in keys.list_keys(tenant):
            table.add_row(
                key.id,
                key.name,
                key.tenant,
                ",".join(key.scopes),
                key.user or "",
                ",".join(key.groups),
                key.created_at.isoformat(timespec="seconds"),
                key.expires_at.isoformat(timespec="seconds") if key.expires_at else "",
                key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
            )
        console.print(table)
    finally:
        close()


@app.command()
def revoke(key_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a key; servers stop accepting it within auth.key_cache_seconds."""
    settings = Settings()
    keys, close = open_key_store(settings)
    try:
        key = keys.revoke_key(key_id, None)
    except RagserveError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        close()
    console.print(f"key {key.id} revoked")
    record_cli_action(settings, "key.revoke", key.tenant, f"key:{key.id}", name=key.name)
