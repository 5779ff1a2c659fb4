"""Hostile files uploaded with good ones through a real ``ragserve serve``: each hostile file ends as a per-file
error with its own code, the good files are searchable, the server keeps answering, and its memory stays
bounded while parser processes crash, time out and run out of memory on its behalf."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests import hostile_files
from tests.conftest import FIXTURES
from tests.integration.server import free_port, start_server

MIB = 1024 * 1024
PARSER_MEMORY_LIMIT_MB = 512
# The server process may grow by this much over its size once ready (model loaded), whatever it is sent: the
# upload itself (41 MB, held a few times over while it is staged and claimed; measured growth ~185 MB) fits, a
# bomb inflated in process (1 GB) or the JSON object bomb parsed in process (~700 MB) does not.
SERVER_GROWTH_BOUND_BYTES = 350 * MIB

HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "bomb.docx": (lambda: hostile_files.docx_zip_bomb(inflated_mib=1024), "archive_too_large"),
    "bomb.pdf": (lambda: hostile_files.pdf_flate_bomb(inflated_mib=1024), "parser_crashed"),
    "nested.html": (lambda: hostile_files.deeply_nested_html(100_000), "nesting_too_deep"),
    "random.pdf": (lambda: hostile_files.random_bytes(256 * 1024), "parse_error"),
    "pages.pdf": (lambda: hostile_files.pdf_with_pages(1_000), "too_many_pages"),
    "program.txt": (hostile_files.elf_binary, "binary_content"),
    "picture.md": (hostile_files.png_image, "binary_content"),
    # A valid 4.7 MB article that takes trafilatura 7 s of CPU (300 MB) against a 2 s timeout (good files take
    # under 0.05 s): what a file that hangs its parser looks like.
    "slow.html": (lambda: hostile_files.large_html(30_000), "parse_timeout"),
    "objects.json": (lambda: b"[" + b"{}," * 10_000_000 + b"{}]", "parse_memory_exceeded"),
}
GOOD = ["guide.md", "article.html", "report.pdf", "onboarding.docx", "faq.json"]


def _rss_bytes(pid: int, field: str = "VmRSS") -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie has no memory lines


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that just ended
            continue
    return pids


class _MemorySampler(threading.Thread):
    """Samples the RSS of the server and each of its children until stopped; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_total = 0
        self.peak_child = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.02):
            children = _children(self.pid)
            child_rss = [_rss_bytes(child) for child in children]
            self.peak_child = max([self.peak_child, *child_rss])
            self.peak_total = max(self.peak_total, _rss_bytes(self.pid) + sum(child_rss))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def test_hostile_files_fail_alone_and_the_server_stays_up_and_bounded(tmp_path: Path, model_cache: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "RAGSERVE_PARSING__TIMEOUT_SECONDS": "2",
        "RAGSERVE_PARSING__MEMORY_LIMIT_MB": str(PARSER_MEMORY_LIMIT_MB),
        "RAGSERVE_PARSING__MAX_PAGES": "100",
        "RAGSERVE_JOBS__POLL_INTERVAL_SECONDS": "0.1",
    }
    server = start_server(tmp_path / "data", port, model_cache, tmp_path / "server.log", env)
    sampler = _MemorySampler(server.pid)
    try:
        ready_rss = _rss_bytes(server.pid)
        sampler.start()
        # Good files come between the hostile ones, so they parse after children crashed and were replaced.
        names = [name for pair in zip(HOSTILE, GOOD + [""] * len(HOSTILE), strict=False) for name in pair if name]
        files = [
            ("files", (name, HOSTILE[name][0]() if name in HOSTILE else (FIXTURES / "files" / name).read_bytes()))
            for name in names
        ]
        response = httpx.post(f"{base}/v1/documents", files=files, data={"collection": "mixed"}, timeout=120)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 300
        while (job := httpx.get(f"{base}/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"the job did not finish: {job}"
            assert server.poll() is None, "the server died"
            time.sleep(0.2)
        sampler.stop()

        assert job["status"] == "partial"
        codes = {error["filename"]: error["code"] for error in job["errors"]}
        assert codes == {name: code for name, (_, code) in HOSTILE.items()}
        for error in job["errors"]:
            assert error["message"].startswith(f"{error['filename']}: ")
        assert "parsing.timeout_seconds" in next(e["message"] for e in job["errors"] if e["filename"] == "slow.html")

        good_ids = [doc_id for name, doc_id in zip(names, job["document_ids"], strict=True) if name in GOOD]
        for doc_id in good_ids:
            document = httpx.get(f"{base}/v1/documents/{doc_id}", params={"include_chunks": True}).json()
            assert document["status"] == "ready"
            query = " ".join(document["chunks"][0]["text"].split()[:12])
            hits = httpx.post(
                f"{base}/v1/search", json={"query": query, "collection": "mixed", "mode": "keyword", "k": 10}
            ).json()
            assert doc_id in {hit["document_id"] for hit in hits["results"]}, document["title"]

        assert httpx.get(f"{base}/ready").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert 'ragserve_ingest_parse_rejections_total{reason="nesting_too_deep"} 1.0' in metrics
        for cause in ("parser_crashed", "parse_timeout", "parse_memory_exceeded"):
            assert f'ragserve_ingest_parser_restarts_total{{cause="{cause}"}} 1.0' in metrics

        server_peak = _rss_bytes(server.pid, "VmHWM")  # the kernel's own high-water mark: no sample missed
        assert server_peak - ready_rss < SERVER_GROWTH_BOUND_BYTES, (ready_rss, server_peak)
        assert sampler.peak_child <= PARSER_MEMORY_LIMIT_MB * MIB
        assert sampler.peak_total < ready_rss + SERVER_GROWTH_BOUND_BYTES + 2 * PARSER_MEMORY_LIMIT_MB * MIB
    finally:
        if sampler.is_alive():
            sampler.stop()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    print(
        f"server RSS ready {ready_rss / MIB:.0f} MiB, peak {server_peak / MIB:.0f} MiB; "
        f"peak parser child {sampler.peak_child / MIB:.0f} MiB; peak total {sampler.peak_total / MIB:.0f} MiB"
    )
