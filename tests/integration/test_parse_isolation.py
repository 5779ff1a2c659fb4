"""The isolated parser: risky formats parse in child processes exactly as in process; a file that crashes its
parser, outlasts the timeout or exhausts the memory limit fails alone with its own error, its child is
replaced, and the pool goes on parsing. Children go away with the pool, and with the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ragserve.errors import (
    ArchiveLimitError,
    ParseMemoryError,
    ParserCrashedError,
    ParseTimeoutError,
    UnsupportedMediaTypeError,
)
from ragserve.ingest.isolation import ISOLATED_EXTENSIONS, IsolatedParser, build_parser
from ragserve.ingest.loaders import SUPPORTED_EXTENSIONS, load_file
from ragserve.settings import ParsingSettings
from tests import hostile_files

FILES = Path(__file__).resolve().parent.parent / "fixtures" / "files"
# A ~3 MB article: about 10 s of trafilatura on this machine, far past the short timeouts below.
SLOW_HTML_PARAGRAPHS = 20_000


def fixture(name: str) -> bytes:
    return (FILES / name).read_bytes()


def children(pid: int | None = None) -> set[int]:
    """The child processes of ``pid`` (default: this process), whichever of its threads started them."""
    pids: set[int] = set()
    for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
        pids.update(int(child) for child in (task / "children").read_text().split())
    return pids


def is_alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs: a killed process's leader turns zombie before its other threads end."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return any("zombie" not in (task / "status").read_text() for task in tasks)
    except FileNotFoundError:
        return False


def restarts(cause: str) -> float:
    return REGISTRY.get_sample_value("ragserve_ingest_parser_restarts_total", {"cause": cause}) or 0.0


MakeParser = Callable[..., IsolatedParser]
Spawned = Callable[[], set[int]]


@pytest.fixture
def spawned() -> Spawned:
    """The child processes of this process started since the test began (session fixtures may own others)."""
    existing = children()
    return lambda: children() - existing


@pytest.fixture
def make_parser() -> Iterator[MakeParser]:
    parsers: list[IsolatedParser] = []

    def make(**limits: object) -> IsolatedParser:
        parser = IsolatedParser(ParsingSettings(workers=1, **limits))  # type: ignore[arg-type]
        parsers.append(parser)
        return parser

    yield make
    for parser in parsers:
        parser.close()


def test_settings_choose_isolation() -> None:
    assert isinstance(build_parser(ParsingSettings()), IsolatedParser)
    assert not isinstance(build_parser(ParsingSettings(isolate=False)), IsolatedParser)


@pytest.mark.parametrize("name", ["article.html", "report.pdf", "onboarding.docx", "faq.json", "tickets.jsonl"])
def test_a_child_parses_exactly_as_this_process_does(make_parser: MakeParser, spawned: Spawned, name: str) -> None:
    parser = make_parser()
    assert parser.parse(fixture(name), name) == load_file(fixture(name), name)
    assert len(spawned()) == 1  # parsed in a child, which stays for the next file


def test_only_text_and_markdown_parse_in_process() -> None:
    """A format added later is isolated unless it is listed here on purpose."""
    in_process = SUPPORTED_EXTENSIONS - ISOLATED_EXTENSIONS
    assert in_process == {".txt", ".md", ".markdown"}


def test_text_markdown_and_unsupported_files_start_no_child(make_parser: MakeParser, spawned: Spawned) -> None:
    parser = make_parser()
    assert parser.parse(fixture("guide.md"), "guide.md").blocks
    assert parser.parse(fixture("release-notes.txt"), "release-notes.txt").blocks
    with pytest.raises(UnsupportedMediaTypeError, match=r"^slides\.pptx: unsupported file type"):
        parser.parse(b"PK\x03\x04", "slides.pptx")
    assert not spawned()


def test_pdf_decompression_bomb_crashes_only_its_child(make_parser: MakeParser) -> None:
    parser = make_parser(memory_limit_mb=512)
    crashed_before = restarts("parser_crashed")
    with pytest.raises(ParserCrashedError, match=r"^bomb\.pdf: the parser process died on the file \(.+\);") as caught:
        parser.parse(hostile_files.pdf_flate_bomb(inflated_mib=1024), "bomb.pdf")
    assert "memory limit of 512 MB (parsing.memory_limit_mb)" in caught.value.message
    assert caught.value.code == "parser_crashed"
    assert restarts("parser_crashed") == crashed_before + 1
    assert parser.parse(fixture("report.pdf"), "report.pdf").blocks  # a new child takes over


def test_file_outlasting_the_timeout_is_abandoned_and_its_child_killed(
    make_parser: MakeParser, spawned: Spawned
) -> None:
    parser = make_parser(timeout_seconds=0.5)
    assert parser.parse(fixture("faq.json"), "faq.json").blocks
    (first_child,) = spawned()
    timeouts_before = restarts("parse_timeout")
    with pytest.raises(ParseTimeoutError, match=r"^slow\.html: parsing took longer than the limit of 0\.5 s"):
        parser.parse(hostile_files.large_html(SLOW_HTML_PARAGRAPHS), "slow.html")
    assert not is_alive(first_child)
    assert restarts("parse_timeout") == timeouts_before + 1
    assert parser.parse(fixture("faq.json"), "faq.json").blocks
    assert spawned() - {first_child}


def test_memory_bomb_hits_the_childs_memory_limit(make_parser: MakeParser) -> None:
    parser = make_parser(memory_limit_mb=256)
    objects = b"[" + b"{}," * 10_000_000 + b"{}]"  # 30 MB that become 10 million dicts, some 700 MB
    with pytest.raises(ParseMemoryError, match=r"^objects\.json: parsing needed more than the memory limit of 256 MB"):
        parser.parse(objects, "objects.json")
    assert parser.parse(fixture("faq.json"), "faq.json").blocks


def test_a_limit_error_keeps_the_child(make_parser: MakeParser, spawned: Spawned) -> None:
    parser = make_parser()
    assert parser.parse(fixture("faq.json"), "faq.json").blocks
    child = spawned()
    with pytest.raises(ArchiveLimitError, match=r"\(parsing\.max_archive_bytes\)"):
        parser.parse(hostile_files.docx_zip_bomb(), "bomb.docx")
    assert parser.parse(fixture("onboarding.docx"), "onboarding.docx").blocks
    assert spawned() == child


def test_a_child_that_died_while_idle_is_replaced_without_failing_the_next_file(
    make_parser: MakeParser, spawned: Spawned
) -> None:
    parser = make_parser()
    assert parser.parse(fixture("faq.json"), "faq.json").blocks
    (child,) = spawned()
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(child):
        assert time.monotonic() < deadline, "SIGKILL did not end the child"
        time.sleep(0.01)
    assert parser.parse(fixture("onboarding.docx"), "onboarding.docx").blocks
    assert spawned() - {child}


def test_children_run_confined(make_parser: MakeParser, spawned: Spawned, monkeypatch: pytest.MonkeyPatch) -> None:
    """Capped address space, no core dumps, first in line for the OOM killer, and none of the server's secrets."""
    monkeypatch.setenv("RAGSERVE_AUTH__KEY_PEPPER", "pepper-secret")
    parser = make_parser(memory_limit_mb=300)
    parser.parse(fixture("faq.json"), "faq.json")
    (child,) = spawned()
    limits = Path(f"/proc/{child}/limits").read_text()
    assert re.search(rf"Max address space\s+{300 * 1024 * 1024}\s+{300 * 1024 * 1024}\s+bytes", limits)
    assert re.search(r"Max core file size\s+0\s+0\s+bytes", limits)
    assert Path(f"/proc/{child}/oom_score_adj").read_text().strip() == "1000"
    environment = Path(f"/proc/{child}/environ").read_bytes()
    assert b"pepper-secret" not in environment
    assert b"PYTHONPATH=" in environment


def test_closing_the_pool_ends_its_children(make_parser: MakeParser, spawned: Spawned) -> None:
    parser = make_parser()
    parser.parse(fixture("faq.json"), "faq.json")
    (child,) = spawned()
    parser.close()
    assert not is_alive(child)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_child_stuck_on_a_file_exits_when_the_server_dies(tmp_path: Path) -> None:
    slow = tmp_path / "slow.html"
    slow.write_bytes(hostile_files.large_html(5 * SLOW_HTML_PARAGRAPHS))  # about a minute of parsing
    script = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from ragserve.ingest.isolation import IsolatedParser
        from ragserve.settings import ParsingSettings
        parser = IsolatedParser(ParsingSettings(workers=1, timeout_seconds=600))
        parser.parse(b'{{"text": "warm"}}', "warm.json")
        print("ready", flush=True)
        threading.Thread(target=parser.parse, args=(Path({str(slow)!r}).read_bytes(), "slow.html")).start()
        threading.Event().wait()
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == b"ready\n"
        (stuck,) = children(server.pid)
        idle_cpu = cpu_seconds(stuck)
        deadline = time.monotonic() + 60
        while cpu_seconds(stuck) < idle_cpu + 1.0:  # it is busy with the slow file
            assert time.monotonic() < deadline, "the parser process never started on the file"
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert server.stdout is not None
        server.stdout.close()
    deadline = time.monotonic() + 15
    while is_alive(stuck):
        assert time.monotonic() < deadline, "the orphaned parser process kept running"
        time.sleep(0.1)
