"""``ragserve index ...``: index versions of a collection on a running server, over its HTTP API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragserve.evaluation import read_queries

app = typer.Typer(help="Index versions: build, canary, promote behind the eval gate, roll back.", no_args_is_help=True)
console = Console()

Url = Annotated[str, typer.Option(envvar="RAGSERVE_URL", help="the ragserve server")]
Collection = Annotated[str, typer.Option("--collection", "-c", help="the collection")]


def call(method: str, url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        response = httpx.request(method, f"{url.rstrip('/')}{path}", json=body, timeout=600)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]error ({response.status_code}):[/red] {message}")
        raise typer.Exit(1)
    return response.json() if response.content else None


def _show(status: dict[str, Any]) -> None:
    table = Table("version", "state", "chunking", "model", "precision", "built", "route")
    for v in status["versions"]:
        route = []
        if v["version"] == status["active"]:
            route.append("active")
        if v["version"] == status["canary"]:
            route.append(f"canary {status['canary_share']:.0%}")
        if v["version"] == status["previous"]:
            route.append("previous")
        table.add_row(
            str(v["version"]),
            v["state"] + (f" ({v['error']})" if v["error"] else ""),
            f"{v['max_tokens']}/{v['overlap_tokens']}",
            v["model"],
            v.get("precision", "f32"),
            f"{v['built_documents']}/{v['total_documents']}",
            ", ".join(route),
        )
    console.print(table)


@app.command("status")
def status_(collection: Collection, url: Url = "http://127.0.0.1:8000") -> None:
    """Show the collection's index versions and where its queries go."""
    _show(call("GET", url, f"/v1/collections/{collection}/index"))


@app.command()
def create(
    collection: Collection,
    max_tokens: Annotated[int | None, typer.Option(help="chunk size in model tokens")] = None,
    overlap_tokens: Annotated[int | None, typer.Option(help="chunk overlap in model tokens")] = None,
    precision: Annotated[
        str | None, typer.Option(help="vector precision: f32, f16, int8 or binary (rescored in f32)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="show progress until the build ends")] = True,
    url: Url = "http://127.0.0.1:8000",
) -> None:
    """Build a new index version in the background (unset options are copied from the active version)."""
    body = {"max_tokens": max_tokens, "overlap_tokens": overlap_tokens, "precision": precision}
    version = call("POST", url, f"/v1/collections/{collection}/index/versions", body)
    console.print(f"building version {version['version']} of {collection}")
    if not wait:
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"version {version['version']}", total=version["total_documents"])
        while True:
            status = call("GET", url, f"/v1/collections/{collection}/index")
            (now,) = (v for v in status["versions"] if v["version"] == version["version"])
            progress.update(task, completed=now["built_documents"], total=now["total_documents"])
            if now["state"] != "building":
                break
            time.sleep(1.0)
    if now["state"] == "failed":
        console.print(f"[red]the build failed:[/red] {now['error']}")
        raise typer.Exit(1)
    console.print(f"version {version['version']} is ready")


@app.command()
def canary(
    collection: Collection,
    version: Annotated[int, typer.Argument(help="the version to send queries to; 0 ends the canary")],
    share: Annotated[int, typer.Option(min=0, max=100, help="percent of queries")] = 10,
    url: Url = "http://127.0.0.1:8000",
) -> None:
    """Send a share of the collection's queries to a ready version."""
    body = {"version": version or None, "share": share / 100 if version else 0.0}
    _show(call("PUT", url, f"/v1/collections/{collection}/index/canary", body))


@app.command()
def promote(
    collection: Collection,
    version: Annotated[int, typer.Argument()],
    force: Annotated[bool, typer.Option(help="promote even if the golden-set gate fails")] = False,
    url: Url = "http://127.0.0.1:8000",
) -> None:
    """Make a version active, if its nDCG@10 on the golden set is within the margin of the active one's."""
    result = call("POST", url, f"/v1/collections/{collection}/index/promote", {"version": version, "force": force})
    gate = result["gate"]
    if gate["active_ndcg_at_10"] is not None:
        console.print(
            f"gate: nDCG@10 {gate['candidate_ndcg_at_10']:.4f} vs active {gate['active_ndcg_at_10']:.4f} "
            f"on {gate['queries']} queries (margin {gate['margin']})"
        )
    _show(result["index"])


@app.command()
def rollback(collection: Collection, url: Url = "http://127.0.0.1:8000") -> None:
    """Make the previously active version active again."""
    _show(call("POST", url, f"/v1/collections/{collection}/index/rollback"))


@app.command()
def delete(
    collection: Collection, version: Annotated[int, typer.Argument()], url: Url = "http://127.0.0.1:8000"
) -> None:
    """Drop a version no query is routed to."""
    call("DELETE", url, f"/v1/collections/{collection}/index/versions/{version}")
    console.print(f"version {version} deleted")


@app.command()
def golden(
    collection: Collection,
    dataset: Annotated[Path, typer.Argument(help="a BEIR-layout directory with queries.jsonl and qrels/")],
    split: Annotated[str, typer.Option()] = "dev",
    url: Url = "http://127.0.0.1:8000",
) -> None:
    """Set the golden set promotions are gated on, from a BEIR split."""
    queries, qrels = read_queries(dataset, split)
    call("PUT", url, f"/v1/collections/{collection}/golden", {"queries": queries, "qrels": qrels})
    console.print(f"golden set of {collection}: {len(queries)} queries")
