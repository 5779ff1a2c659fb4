"""The parser child process, and the pipe protocol it speaks with ``isolation.py``.

``python -m ragserve.ingest.parse_worker LIMITS_JSON`` imports the parsers, caps its own address space at
``memory_limit_mb`` (``RLIMIT_AS``, so an allocation past it fails in this process, never in the server), says
it is ready, then parses one file at a time: a request is two frames (the file name, the file's bytes), a
reply one frame of JSON, ``{"title", "blocks": [[text, section_path, page], ...]}`` or ``{"error": {"code",
"message"}}``. A frame is an 8-byte big-endian length and that many bytes. JSON, not pickle: a parser that a
hostile file subverted must not be able to run code in the server by its reply.

The parent kills this process when a file takes longer than ``timeout_seconds``; the process exits by itself
when its stdin closes, or when its parent dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from ragserve.domain import ParsedDocument
from ragserve.errors import ParseMemoryError, RagserveError
from ragserve.ingest.loaders import load_file
from ragserve.settings import ParsingSettings

LENGTH_BYTES = 8
READY = b"ready"
# How often the child checks that its parent is alive (an orphan stuck on a file must not run forever).
_PARENT_CHECK_SECONDS = 1.0


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(len(payload).to_bytes(LENGTH_BYTES, "big"))
    stream.write(payload)


def frame_length(header: bytes) -> int:
    """The payload length a frame's ``LENGTH_BYTES`` header announces."""
    return int.from_bytes(header, "big")


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or None at the end of the stream."""
    header = _read_exact(stream, LENGTH_BYTES)
    if header is None:
        return None
    return _read_exact(stream, frame_length(header))


def encode_parsed(parsed: ParsedDocument) -> bytes:
    blocks = [[block.text, list(block.section_path), block.page] for block in parsed.blocks]
    # surrogatepass: a PDF's text layer may hold lone surrogates, which strict UTF-8 cannot encode.
    return json.dumps({"title": parsed.title, "blocks": blocks}, ensure_ascii=False).encode("utf-8", "surrogatepass")


def encode_error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def decode_reply(payload: bytes) -> Any:
    return json.loads(payload.decode("utf-8", "surrogatepass"))


def _parse(data: bytes, filename: str, limits: ParsingSettings) -> bytes:
    try:
        return encode_parsed(load_file(data, filename, limits))
    except RagserveError as exc:
        return encode_error(exc.code, exc.message)
    except MemoryError:
        message = (
            f"{filename}: parsing needed more than the memory limit of {limits.memory_limit_mb} MB "
            "(parsing.memory_limit_mb)"
        )
        return encode_error(ParseMemoryError.code, message)
    except Exception as exc:  # a parsing library's own bug fails this file, not the process
        traceback.print_exc(file=sys.stderr)
        return encode_error("parse_error", f"{filename}: could not parse the document ({type(exc).__name__})")


def _limit_resources(memory_limit_mb: int) -> None:
    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on a hostile file leaves no core dump behind
    # Should the container run out of memory anyway, the kernel's OOM killer takes this process, not the server.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    limits = ParsingSettings.model_validate_json(sys.argv[1])
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever a library prints must not corrupt the protocol
    _exit_with_parent()
    _limit_resources(limits.memory_limit_mb)
    write_frame(replies, READY)
    replies.flush()
    while True:
        name = read_frame(requests)
        data = read_frame(requests) if name is not None else None
        if name is None or data is None:
            return
        write_frame(replies, _parse(data, name.decode("utf-8", "replace"), limits))
        replies.flush()
        del data


if __name__ == "__main__":
    main()
