"""Where uploaded files are parsed: in this process, or in a small pool of child processes with limits.

A hostile file (a decompression bomb, HTML nested a hundred thousand deep, a crafted PDF) must fail alone and
never take the server down. ``IsolatedParser`` parses HTML, PDF, Word and JSON files in child processes
(``parse_worker.py``), each under an address-space limit, and kills the one whose file takes longer than the
timeout; a killed or crashed child is replaced on next use. Plain text and Markdown stay in this process: their
parsing is linear in the input, which the upload limit bounds, and their bytes are checked for binary content
first. JSON is not in that list because a small document can expand to a large object graph (``[{},{},...]``
is some 70 bytes of memory per 3 bytes of file).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import ragserve
from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import (
    ArchiveLimitError,
    BinaryContentError,
    DocumentParseError,
    NestingLimitError,
    PageLimitError,
    ParseLimitError,
    ParseMemoryError,
    ParserCrashedError,
    ParseTimeoutError,
    RagserveError,
    ServiceUnavailableError,
    TextLimitError,
    UnsupportedMediaTypeError,
)
from ragserve.ingest import parse_worker
from ragserve.ingest.loaders import file_extension, load_file
from ragserve.observability.metrics import PARSE_REJECTIONS, PARSER_RESTARTS
from ragserve.settings import ParsingSettings

logger = logging.getLogger(__name__)

ISOLATED_EXTENSIONS = frozenset({".html", ".htm", ".pdf", ".docx", ".json", ".jsonl"})
"""Extensions parsed in a child process; the others (text, Markdown, unsupported) stay in the server process."""
# Importing the parsers takes a second or two; a child that is not ready in this time is broken.
_STARTUP_TIMEOUT_SECONDS = 60.0
_EXIT_GRACE_SECONDS = 2.0
_READ_BYTES = 1024 * 1024
_INHERITED_VARIABLES = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED"})
# The errors a child may report for a file, by code; any other code is reported as a plain parse error.
_REPORTED_ERRORS: dict[str, type[RagserveError]] = {
    cls.code: cls
    for cls in (
        DocumentParseError,
        UnsupportedMediaTypeError,
        BinaryContentError,
        ArchiveLimitError,
        NestingLimitError,
        PageLimitError,
        TextLimitError,
        ParseMemoryError,
    )
}


class DocumentParser(Protocol):
    """Parses one uploaded file into text blocks; safe to call from several threads."""

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        """Raises UnsupportedMediaTypeError, or DocumentParseError (a subclass for a limit) naming the file."""
        ...

    def close(self) -> None:
        """Release the child processes, if any."""
        ...


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    try:
        yield
    except (BinaryContentError, ParseLimitError, ParserCrashedError) as exc:
        PARSE_REJECTIONS.labels(reason=exc.code).inc()
        raise


class InProcessParser:
    """Parses in the calling thread, under the byte and text limits only (``parsing.isolate=false``)."""

    def __init__(self, limits: ParsingSettings) -> None:
        self._limits = limits

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with _counted():
            return load_file(data, filename, self._limits)

    def close(self) -> None:
        pass


class IsolatedParser:
    """Parses risky formats in up to ``limits.workers`` child processes, started when first needed."""

    def __init__(self, limits: ParsingSettings) -> None:
        self._limits = limits
        self._slots = threading.BoundedSemaphore(limits.workers)
        self._idle: list[_ChildParser] = []
        self._lock = threading.Lock()
        self._closed = False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with _counted():
            if file_extension(filename) not in ISOLATED_EXTENSIONS:
                return load_file(data, filename, self._limits)
            with self._slots:
                child = self._take(filename)
                try:
                    parsed = child.parse(data, filename, self._limits.timeout_seconds)
                except (ParseTimeoutError, ParserCrashedError, ParseMemoryError) as exc:
                    # A child that hit its memory limit may be left fragmented or broken: replace it too.
                    PARSER_RESTARTS.labels(cause=exc.code).inc()
                    child.kill()
                    raise
                except RagserveError:  # the child reported the file's error: it is fine for the next one
                    self._give_back(child)
                    raise
                except BaseException:
                    child.kill()  # interrupted mid-exchange: the pipe's state is unknown
                    raise
                self._give_back(child)
                return parsed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def _take(self, filename: str) -> _ChildParser:
        while True:
            with self._lock:
                if self._closed:
                    raise ServiceUnavailableError("the parser pool is closed")
                child = self._idle.pop() if self._idle else None
            if child is None:
                return _ChildParser.start(self._limits, filename)
            if child.is_alive():
                return child
            child.kill()  # it died while idle (the OOM killer, an operator): not a crash of the next file

    def _give_back(self, child: _ChildParser) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        child.stop()


def build_parser(limits: ParsingSettings) -> DocumentParser:
    """The parser ``parsing.isolate`` asks for."""
    return IsolatedParser(limits) if limits.isolate else InProcessParser(limits)


class _ChildParser:
    """One ``parse_worker`` process and its pipes."""

    def __init__(self, process: subprocess.Popen[bytes], limits: ParsingSettings) -> None:
        self._process = process
        self._limits = limits

    @classmethod
    def start(cls, limits: ParsingSettings, filename: str) -> _ChildParser:
        """Start a child and wait until it is ready. Raises ParserCrashedError naming ``filename`` if it is not."""
        command = [sys.executable, "-m", "ragserve.ingest.parse_worker", limits.model_dump_json()]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_environment(), start_new_session=True
        )
        child = cls(process, limits)
        try:
            ready = child._read_frame(time.monotonic() + _STARTUP_TIMEOUT_SECONDS, filename)
        except DocumentParseError:
            child.kill()
            raise ParserCrashedError(f"{filename}: the parser process did not start (see the server log)") from None
        if ready != parse_worker.READY:
            child.kill()
            raise ParserCrashedError(f"{filename}: the parser process did not start (see the server log)")
        logger.debug("parser process %d started", process.pid)
        return child

    def parse(self, data: bytes, filename: str, timeout_seconds: float) -> ParsedDocument:
        """Raises ParseTimeoutError, ParserCrashedError, or the error the child reported for the file."""
        deadline = time.monotonic() + timeout_seconds
        stdin = self._process.stdin
        assert stdin is not None
        try:
            parse_worker.write_frame(stdin, filename.encode("utf-8", "replace"))
            parse_worker.write_frame(stdin, data)
            stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise self._crashed(filename) from None
        return _decode(self._read_frame(deadline, filename), filename)

    def _read_frame(self, deadline: float, filename: str) -> bytes:
        header = self._read_exact(parse_worker.LENGTH_BYTES, deadline, filename)
        size = parse_worker.frame_length(header)
        # The reply is text bounded by max_text_chars; JSON framing at most doubles it, UTF-8 takes 4 bytes.
        if size > 8 * self._limits.max_text_chars + 1024 * 1024:
            raise ParserCrashedError(f"{filename}: the parser process sent a reply of {size:,} bytes")
        return self._read_exact(size, deadline, filename)

    def _read_exact(self, size: int, deadline: float, filename: str) -> bytes:
        stdout = self._process.stdout
        assert stdout is not None
        fd = stdout.fileno()
        # poll(), not select(): a busy server's descriptors may be numbered past select()'s limit of 1024.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        buffer = bytearray()
        while len(buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise ParseTimeoutError(
                    f"{filename}: parsing took longer than the limit of {self._limits.timeout_seconds:g} s "
                    "(parsing.timeout_seconds)"
                )
            try:
                chunk = os.read(fd, min(size - len(buffer), _READ_BYTES))
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise self._crashed(filename) from exc
            if not chunk:
                raise self._crashed(filename)
            buffer += chunk
        return bytes(buffer)

    def _crashed(self, filename: str) -> ParserCrashedError:
        try:
            status = self._process.wait(timeout=_EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            status = None
        if status is not None and status < 0:
            how = f"killed by {signal.Signals(-status).name}"
        else:
            how = f"exit status {status}" if status is not None else "closed its pipe"
        return ParserCrashedError(
            f"{filename}: the parser process died on the file ({how}); the file is damaged, or parsing it needs "
            f"more than the memory limit of {self._limits.memory_limit_mb} MB (parsing.memory_limit_mb)"
        )

    def is_alive(self) -> bool:
        """Not exited, and its reply pipe open: an idle child has nothing to say, so input or hang-up means death."""
        if self._process.poll() is not None:
            return False
        stdout = self._process.stdout
        if stdout is None or stdout.closed:
            return False
        poller = select.poll()
        poller.register(stdout.fileno(), select.POLLIN)
        return not poller.poll(0)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Let the child exit on its own (end of its input), killing it if it does not."""
        self._close_pipes()
        try:
            self._process.wait(timeout=_EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _child_environment() -> dict[str, str]:
    """The child's environment: none of the server's settings or secrets, which a subverted parser could read."""
    env = {name: value for name, value in os.environ.items() if name in _INHERITED_VARIABLES}
    # The child must import this same ragserve, wherever it was imported from here.
    package_root = str(Path(ragserve.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    # One malloc arena: the child is single-threaded, and every arena reserves address space under RLIMIT_AS.
    env["MALLOC_ARENA_MAX"] = "1"
    return env


def _decode(payload: bytes, filename: str) -> ParsedDocument:
    """The child's reply as a ParsedDocument, or its error raised. The reply is checked, not trusted."""
    try:
        reply = parse_worker.decode_reply(payload)
        if "error" in reply:
            raise _reported_error(reply["error"])
        return ParsedDocument(
            blocks=tuple(_block(item) for item in reply["blocks"]), title=_optional_str(reply["title"])
        )
    except RagserveError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ParserCrashedError(f"{filename}: the parser process sent a malformed reply") from exc


def _reported_error(error: Any) -> RagserveError:
    code, message = error["code"], error["message"]
    if not isinstance(code, str) or not isinstance(message, str):
        raise TypeError("error code and message must be strings")
    return _REPORTED_ERRORS.get(code, DocumentParseError)(message)


def _block(item: Any) -> TextBlock:
    text, section_path, page = item
    if not isinstance(text, str) or not all(isinstance(part, str) for part in section_path):
        raise TypeError("block text and sections must be strings")
    if page is not None and not isinstance(page, int):
        raise TypeError("page must be an integer")
    return TextBlock(text=text, section_path=tuple(section_path), page=page)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("title must be a string")
    return value
