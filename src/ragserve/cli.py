"""The ``ragserve`` command: serve the API, ingest files, search, ask and evaluate, with embedded defaults.

``ingest``, ``search``, ``ask`` and ``eval`` open the data directory in this process (the server must not be
running on the same directory: the lock says so).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import anyio.to_thread
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragserve import cli_audit, cli_index, cli_keys, cli_worker
from ragserve.answer_evaluation import QAItem, QASet, answer_report, read_qa, run_questions, sample_questions
from ragserve.domain import DocumentInput, Job, SearchFilters, SearchMode
from ragserve.errors import RagserveError
from ragserve.evaluation import mrr_at, ndcg_at, percentile, read_corpus, read_queries, recall_at
from ragserve.ingest.loaders import is_supported
from ragserve.ingest.sync import SyncReport, directory_files
from ragserve.retrieval.search import SearchQuery
from ragserve.service import RagService
from ragserve.settings import Settings

app = typer.Typer(help="ragserve: hybrid search and cited answers over your documents.", no_args_is_help=True)
app.add_typer(cli_index.app, name="index")
app.add_typer(cli_worker.dlq, name="dlq")
app.add_typer(cli_keys.app, name="keys")
app.add_typer(cli_audit.app, name="audit")
app.command()(cli_worker.worker)
console = Console()
T = TypeVar("T")
_BATCH = 100


def _run(settings: Settings, work: Callable[[RagService], Awaitable[T]], run_jobs: bool = True) -> T:
    async def main() -> T:
        service = RagService.open(settings)
        try:
            await service.start(run_jobs=run_jobs)
            return await work(service)
        finally:
            await service.close()

    try:
        return asyncio.run(main())
    except RagserveError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from ragserve.api.app import create_app
    from ragserve.observability.logging import configure_logging

    settings = Settings()
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    settings = settings.model_copy(update={"server": settings.server.model_copy(update=updates)})
    configure_logging(settings.server.log_level, json_logs=settings.observability.json_logs)
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        log_config=None,  # uvicorn's records go through the handler configure_logging installed
    )


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and is_supported(p.name))
        elif path.is_file():
            yield path
        else:
            raise typer.BadParameter(f"{path} does not exist")


def _inputs(path: Path, collection: str) -> Iterator[DocumentInput]:
    """A JSONL file is a corpus: one document per line (``_id``/``id``, ``title``, ``text``)."""
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle, start=1):
                if line.strip():
                    row = json.loads(line)
                    ext = row.get("_id", row.get("id"))
                    yield DocumentInput(
                        collection=collection,
                        external_id=None if ext is None else str(ext),
                        title=row.get("title") or None,
                        text=str(row.get("text", "")),
                        filename=f"{path.name}#{n}",
                        metadata=row.get("metadata") or {},
                    )
        return
    yield DocumentInput(collection=collection, external_id=str(path), filename=path.name, content=path.read_bytes())


async def _ingest(service: RagService, inputs: list[DocumentInput], label: str) -> dict[str, int]:
    """Submit in request-sized batches and follow the jobs with a progress bar; returns status counts."""
    jobs = []
    for i in range(0, len(inputs), _BATCH):
        jobs.append(await service.submit(inputs[i : i + _BATCH]))
    return await _follow(service, jobs, label)


async def _follow(service: RagService, jobs: Sequence[Job], label: str) -> dict[str, int]:
    """Follow jobs with a progress bar until they finish; returns status counts and prints failures."""
    total = sum(job.progress.total for job in jobs)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)
        while True:
            states = [await service.get_job(job.id) for job in jobs]
            progress.update(task, completed=sum(s.progress.done for s in states))
            if all(s.progress.done >= s.progress.total for s in states):
                break
            await asyncio.sleep(0.25)
    counts: dict[str, int] = {"documents": total, "failed": 0}
    for state in states:
        counts["failed"] += len(state.errors)
        for error in state.errors:
            console.print(f"[yellow]failed:[/yellow] {error.filename or error.document_id}: {error.message}")
    return counts


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (searched recursively)")],
    collection: Annotated[str | None, typer.Option(help="collection to ingest into")] = None,
) -> None:
    """Ingest files and directories, then print a summary."""
    settings = Settings()
    name = collection or settings.default_collection
    inputs = [item for path in _files(paths) for item in _inputs(path, name)]
    if not inputs:
        console.print("nothing to ingest: no supported files found")
        raise typer.Exit(1)
    start = time.perf_counter()
    counts = _run(settings, lambda s: _ingest(s, inputs, f"ingesting into {name}"))
    elapsed = time.perf_counter() - start
    ok = counts["documents"] - counts["failed"]
    console.print(f"{ok} documents ingested, {counts['failed']} failed, in {elapsed:.1f} s")
    if counts["failed"]:
        raise typer.Exit(2)


async def _sync(
    service: RagService, collection: str, source: str, root: Path, delete_missing: bool, dry_run: bool
) -> tuple[SyncReport, int]:
    """Sync and follow the jobs; returns the report and how many files failed to ingest."""
    files = directory_files(root)
    report = await service.sync(collection, source, files, delete_missing=delete_missing, dry_run=dry_run)
    if not report.jobs:
        return report, 0
    return report, (await _follow(service, report.jobs, f"syncing into {collection}"))["failed"]


@app.command()
def sync(
    directory: Annotated[Path, typer.Argument(help="directory to mirror (recursively)", file_okay=False, exists=True)],
    collection: Annotated[str | None, typer.Option(help="collection to sync into")] = None,
    source: Annotated[str | None, typer.Option(help="the source's name [default: the directory's path]")] = None,
    delete_missing: Annotated[
        bool, typer.Option("--delete-missing/--keep-missing", help="delete the documents of files that are gone")
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would change; change nothing")] = False,
) -> None:
    """Apply a directory's new, changed and deleted files to a collection; unchanged files cost nothing.

    Each file is one document whose external id is its path relative to DIRECTORY. Only documents synced from
    the same source are ever deleted."""
    settings = Settings()
    name = collection or settings.default_collection
    root = directory.resolve()
    report, failed = _run(settings, lambda s: _sync(s, name, source or str(root), root, delete_missing, dry_run))
    plan = report.plan
    if dry_run:
        deleted = [d.external_id for d in plan.to_delete]
        for mark, paths in (("+", plan.to_add), ("~", plan.to_update), ("-", deleted)):
            for path in paths:
                console.print(f"{mark} {path}", markup=False)
    for path in plan.conflicts:
        console.print(f"[yellow]conflict:[/yellow] {escape(path)}: a document not synced from this source has its id")
    summary = (
        f"added {len(plan.to_add)}, updated {len(plan.to_update)}, deleted {len(plan.to_delete)}, "
        f"unchanged {len(plan.unchanged)}, failed {failed}; skipped {len(report.skipped)} unsupported files, "
        f"{len(plan.conflicts)} conflicts"
    )
    console.print(f"dry run, would have: {summary}" if dry_run else summary)
    if failed:
        raise typer.Exit(2)


@app.command()
def search(
    query: str,
    mode: Annotated[str | None, typer.Option(help="hybrid, dense or keyword")] = None,
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    collection: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Search a collection."""
    if mode not in (None, "hybrid", "dense", "keyword"):
        raise typer.BadParameter("mode must be hybrid, dense or keyword")
    q = SearchQuery(query, k, 0, collection, SearchFilters(), mode)  # type: ignore[arg-type]
    result = _run(Settings(), lambda s: s.search(q), run_jobs=False)
    if as_json:
        rows = [
            {
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "external_id": h.external_id,
                "title": h.title,
                "source": h.source,
                "score": h.score,
                "text": h.text,
            }
            for h in result.hits
        ]
        typer.echo(json.dumps({"results": rows, "mode": result.mode}, indent=2))
        return
    table = Table("#", "score", "title", "text")
    for i, hit in enumerate(result.hits, start=1):
        table.add_row(str(i), f"{hit.score:.3f}", hit.title or hit.source or "", hit.text[:160])
    console.print(table)


@app.command()
def ask(
    question: str,
    collection: Annotated[str | None, typer.Option()] = None,
    k: Annotated[int | None, typer.Option(min=1, max=50)] = None,
) -> None:
    """Answer a question with cited sources."""
    answer = _run(Settings(), lambda s: s.answer(question, k, collection, None), run_jobs=False)
    console.print(answer.text)
    for c in answer.citations:
        console.print(f'  [{c.index}] {c.title or c.source or c.document_id}: "{c.quote[:200]}"')


async def _ensure_corpus(service: RagService, dataset: Path, collection: str) -> None:
    existing = await anyio.to_thread.run_sync(service.store.external_ids, collection)
    missing = [
        DocumentInput(collection=collection, external_id=d.id, title=d.title or None, text=d.text)
        for d in read_corpus(dataset)
        if d.id not in existing
    ]
    if missing:
        await _ingest(service, missing, f"ingesting {dataset.name}")


async def _evaluate(
    service: RagService, dataset: Path, split: str, modes: list[str], collection: str
) -> dict[str, Any]:
    await _ensure_corpus(service, dataset, collection)
    queries, qrels = read_queries(dataset, split)
    collection_id = service.store.get_collection(collection).id
    index_id = service.versions.index_route(collection_id).active.index_id
    report: dict[str, Any] = {"dataset": dataset.name, "split": split, "queries": len(queries), "modes": {}}
    for mode in cast(list[SearchMode], modes):
        scores: dict[str, list[float]] = {"ndcg@10": [], "recall@100": [], "mrr@10": []}
        latencies: list[float] = []
        for qid, text in queries.items():
            start = time.perf_counter()
            ranking = await anyio.to_thread.run_sync(
                service.retriever.rank, collection_id, index_id, text, 300, SearchFilters(), mode
            )
            scored = ranking.scored
            latencies.append((time.perf_counter() - start) * 1000)
            ranked = await anyio.to_thread.run_sync(service.store.external_ids_of, [cid for cid, _ in scored])
            scores["ndcg@10"].append(ndcg_at(ranked, qrels[qid]))
            scores["recall@100"].append(recall_at(ranked, qrels[qid]))
            scores["mrr@10"].append(mrr_at(ranked, qrels[qid]))
        report["modes"][mode] = {
            **{name: round(sum(v) / len(v), 4) for name, v in scores.items()},
            "latency_ms_p50": round(percentile(latencies, 50), 2),
            "latency_ms_p95": round(percentile(latencies, 95), 2),
        }
    return report


async def _evaluate_all(
    service: RagService, datasets: list[Path], split: str, modes: list[str], collections: list[str]
) -> list[dict[str, Any]]:
    return [await _evaluate(service, d, split, modes, c) for d, c in zip(datasets, collections, strict=True)]


def _check_datasets(datasets: list[Path], split: str, collection: str | None) -> list[str]:
    """Each dataset's collection; refuses missing files and two datasets sharing one collection."""
    if collection is not None and len(datasets) > 1:
        raise typer.BadParameter("--collection takes a single dataset; several each go to their own")
    for dataset in datasets:
        for needed in (dataset / "corpus.jsonl", dataset / "queries.jsonl", dataset / "qrels" / f"{split}.tsv"):
            if not needed.is_file():
                raise typer.BadParameter(f"{needed} not found")
    names = [collection or d.resolve().name for d in datasets]
    if len(set(names)) < len(names):
        raise typer.BadParameter("two datasets have the same folder name, so they would share a collection")
    return names


@app.command("eval")
def evaluate(
    datasets: Annotated[list[Path], typer.Argument(help="BEIR-layout dataset directories")],
    split: Annotated[str, typer.Option()] = "test",
    mode: Annotated[list[str] | None, typer.Option(help="repeat for several; default: all three")] = None,
    collection: Annotated[str | None, typer.Option(help="default: the dataset directory's name")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    plot: Annotated[Path | None, typer.Option(help="draw nDCG@10 and latency per mode and dataset as a PNG")] = None,
) -> None:
    """Evaluate retrieval on BEIR datasets: nDCG@10, Recall@100, MRR@10 and per-query latency.

    Each dataset is ingested (once) into its own collection, named after its directory."""
    modes = mode or ["keyword", "dense", "hybrid"]
    for m in modes:
        if m not in ("hybrid", "dense", "keyword"):
            raise typer.BadParameter(f"unknown mode {m!r}")
    names = _check_datasets(datasets, split, collection)
    reports = _run(Settings(), lambda s: _evaluate_all(s, datasets, split, modes, names))
    for report in reports:
        console.print(_retrieval_table(report, split))
    if json_file is not None:
        combined = reports[0] if len(reports) == 1 else {"split": split, "modes": modes, "datasets": reports}
        json_file.write_text(json.dumps(combined, indent=2))
    if plot is not None:
        from ragserve.evaluation_plot import plot_retrieval

        plot_retrieval(reports, plot)


def _retrieval_table(report: dict[str, Any], split: str) -> Table:
    table = Table(
        "mode",
        "nDCG@10",
        "Recall@100",
        "MRR@10",
        "p50 ms",
        "p95 ms",
        title=f"{report['dataset']} ({split}, {report['queries']} queries)",
    )
    for m, r in report["modes"].items():
        table.add_row(
            m,
            f"{r['ndcg@10']:.4f}",
            f"{r['recall@100']:.4f}",
            f"{r['mrr@10']:.4f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p95']:.1f}",
        )
    return table


async def _evaluate_answers(
    service: RagService, dataset: Path, qa: QASet, items: list[QAItem], collection: str, seed: int
) -> dict[str, Any]:
    await _ensure_corpus(service, dataset, collection)
    documents = len(await anyio.to_thread.run_sync(service.store.external_ids, collection))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"asking {qa.name}", total=len(items))
        records = await run_questions(
            items,
            lambda question: service.answer(question, None, collection, None),
            qa.has_spans,
            time.perf_counter,
            lambda done: progress.update(task, completed=done),
        )
    run = {"collection": collection, "sample": len(items), "seed": seed, "k": service.settings.answer.k}
    return answer_report(qa, records, run, documents)


@app.command("eval-answers")
def evaluate_answers(
    dataset: Annotated[Path, typer.Argument(help="a question-answering dataset: corpus.jsonl and qa.jsonl")],
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="questions to ask; default 500, or 300 of each kind when some are unanswerable"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the sample")] = 0,
    collection: Annotated[str | None, typer.Option(help="default: the dataset directory's name")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Evaluate cited answers on a QA set (SQuAD, CLAP NQ): gold answer found, gold passage cited, abstentions.

    Ingests the whole corpus once, then asks a seeded sample of questions through the answer path with the
    configured generator."""
    try:
        qa = read_qa(dataset)
    except RagserveError as exc:
        raise typer.BadParameter(exc.message) from None
    items = sample_questions(qa, sample, seed)
    name = collection or dataset.resolve().name
    report = _run(Settings(), lambda s: _evaluate_answers(s, dataset, qa, items, name, seed))
    console.print(_answers_table(report))
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))


def _answers_table(report: dict[str, Any]) -> Table:
    table = Table("measure", "value", "target", title=f"{report['dataset']} ({report['sample']} questions)")
    for kind in ("answerable", "unanswerable"):
        for key, value in report.get(kind, {}).items():
            if value is not None and key != "questions":
                table.add_row(f"{kind}: {key.replace('_', ' ')}", f"{value:.1%}")
    for key in ("median_answer_words", "latency_ms_p50", "latency_ms_p95"):
        table.add_row(key.replace("_", " "), str(report[key]))
    for target in report["targets"]:
        sign = "<=" if target["is_maximum"] else ">="
        verdict = "[green]met[/green]" if target["met"] else "[red]not met[/red]"
        table.add_row(target["name"], str(target["value"]), f"{sign} {target['bound']}: {verdict}")
    return table


if __name__ == "__main__":
    app()
