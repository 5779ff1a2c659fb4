"""What parsing uploads in child processes costs: parse throughput per format, and ingestion end to end.

The corpus's documents are rendered as files: HTML articles, JSON records and Markdown (parsed in process
either way), plus copies of the test fixtures' PDF and Word files. Each file is then parsed one after another,
as the pipeline does, in process (``parsing.isolate=false``) and by the isolated pool (one child, started
before timing), alternating over rounds so that other load on a shared machine weighs on both alike. Finally
the HTML and PDF files are ingested end to end (parse, chunk, embed, write) by an in-process service, once per
setting, each in a fresh data directory.

    python bench/parse_isolation.py tests/fixtures/scifact_slice --rounds 3

Prints one JSON object: files/s and ms/file per format and setting, their ratios, and ingestion docs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from ragserve.domain import DocumentInput
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import CorpusDocument, read_corpus
from ragserve.ingest.isolation import DocumentParser, InProcessParser, IsolatedParser
from ragserve.service import RagService
from ragserve.settings import ParsingSettings, Settings

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "files"


def render(doc: CorpusDocument, extension: str) -> bytes:
    if extension == ".html":
        body = "".join(f"<p>{html.escape(sentence)}.</p>" for sentence in doc.text.split(". ") if sentence)
        page = f"<html><head><title>{html.escape(doc.title)}</title></head><body><article><h1>"
        return f"{page}{html.escape(doc.title)}</h1>{body}</article></body></html>".encode()
    if extension == ".json":
        return json.dumps({"title": doc.title, "text": doc.text}).encode()
    return f"# {doc.title}\n\n{doc.text}\n".encode()


def make_files(dataset: Path, copies: int) -> dict[str, list[tuple[str, bytes]]]:
    docs = list(read_corpus(dataset))
    files = {ext: [(f"{d.id}{ext}", render(d, ext)) for d in docs] for ext in (".html", ".json", ".md")}
    for name in ("report.pdf", "onboarding.docx"):
        data = (FIXTURES / name).read_bytes()
        files[Path(name).suffix] = [(f"{i}-{name}", data) for i in range(copies)]
    return files


def time_parser(parser: DocumentParser, files: list[tuple[str, bytes]]) -> float:
    start = time.perf_counter()
    for name, data in files:
        parser.parse(data, name)
    return time.perf_counter() - start


def parse_throughput(files: dict[str, list[tuple[str, bytes]]], rounds: int) -> dict[str, Any]:
    limits = ParsingSettings(workers=1)
    parsers: dict[str, DocumentParser] = {"in_process": InProcessParser(limits), "isolated": IsolatedParser(limits)}
    for parser in parsers.values():  # start the child and warm both up (first calls load lazy state)
        for name, data in (batch[0] for batch in files.values()):
            parser.parse(data, name)
    seconds: dict[str, dict[str, float]] = {setting: dict.fromkeys(files, 0.0) for setting in parsers}
    for _ in range(rounds):
        for extension, batch in files.items():
            for setting, parser in parsers.items():
                seconds[setting][extension] += time_parser(parser, batch)
    for parser in parsers.values():
        parser.close()
    report: dict[str, Any] = {}
    for extension, batch in files.items():
        count = len(batch) * rounds
        row = {
            setting: {
                "files_per_s": count / seconds[setting][extension],
                "ms_per_file": 1000 * seconds[setting][extension] / count,
            }
            for setting in parsers
        }
        row["isolated_over_in_process_time"] = seconds["isolated"][extension] / seconds["in_process"][extension]
        report[extension] = row
    return report


async def ingest(inputs: list[DocumentInput], isolate: bool, embedder: OnnxEmbedder, cache: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            embedding={"cache_dir": cache},  # type: ignore[arg-type]
            parsing={"isolate": isolate},  # type: ignore[arg-type]
            jobs={"poll_interval_seconds": 0.05},  # type: ignore[arg-type]
        )
        service = RagService.open(settings, embedder)
        try:
            await service.start()
            start = time.perf_counter()
            for i in range(0, len(inputs), 100):
                await service.submit(inputs[i : i + 100])
            await service.queue.wait_idle()
            elapsed = time.perf_counter() - start
            documents = (await service.list_documents("bench", 1, 0))[1]
        finally:
            await service.close()
    return {"seconds": elapsed, "documents": documents, "docs_per_s": documents / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=50, help="copies of the fixture PDF and Word files")
    args = parser.parse_args()
    files = make_files(args.dataset, args.copies)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "files": {extension: len(batch) for extension, batch in files.items()},
        "parse": parse_throughput(files, args.rounds),
    }
    with tempfile.TemporaryDirectory() as cache:
        embedder = OnnxEmbedder(cache_dir=Path(cache))
        inputs = [
            DocumentInput(collection="bench", filename=name, content=data)
            for name, data in files[".html"] + files[".pdf"]
        ]
        ingestion = {}
        for isolate in (False, True):
            ingestion["isolated" if isolate else "in_process"] = asyncio.run(
                ingest(inputs, isolate, embedder, Path(cache))
            )
        ingestion["isolated_over_in_process_time"] = (
            ingestion["isolated"]["seconds"] / ingestion["in_process"]["seconds"]
        )
        report["ingest_html_and_pdf"] = ingestion
    report["machine"]["load_avg_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
