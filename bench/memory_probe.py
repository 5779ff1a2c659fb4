"""``ragserve serve`` with a memory probe inside: where the server's resident memory goes, sampled over time.

    python bench/memory_probe.py OUT.jsonl [--tracemalloc] -- serve --port 8000

``soak.py --probe OUT.jsonl`` starts its server this way. Every ``RAGSERVE_PROBE_SECONDS`` (default 10) one JSON
line is appended to OUT.jsonl with the process's RSS next to what can be attributed:

- ``sqlite_mb``: every byte SQLite holds (``sqlite3_memory_used``: page caches, schemas, statements) in this
  process; ``sqlite_connections`` open ``sqlite3.Connection`` objects, and ``threads`` / ``os_threads``
  (Python threads by name prefix; every OS thread, ONNX Runtime's included).
- ``python_traced_mb``: the Python heap (``tracemalloc``, only with ``--tracemalloc``: it slows the server).
- ``malloc``: glibc's ``mallinfo2`` over all arenas (``in_use_mb``, ``free_in_heaps_mb`` kept but unused,
  ``mmapped_mb``) and the number of malloc arenas: what fragmentation across threads would show.

With ``--tracemalloc``, the Python lines that grew most between the first sample after
``RAGSERVE_PROBE_WARMUP_SECONDS`` (default 120) and the latest sample are written to OUT.jsonl's
``.top.txt`` every minute. This is a diagnosis tool: its numbers explain, ``soak.py`` measures.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import json
import os
import re
import sqlite3
import sys
import threading
import time
import tracemalloc
import weakref
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_LIBC.mallinfo2.restype = _MallInfo2
_LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
_LIBC.open_memstream.restype = ctypes.c_void_p
_LIBC.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
_LIBC.fclose.argtypes = [ctypes.c_void_p]
_LIBC.free.argtypes = [ctypes.c_void_p]
# The same shared library Python's sqlite3 module uses (it links libsqlite3.so.0 dynamically here).
_SQLITE = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
_SQLITE.sqlite3_memory_used.restype = ctypes.c_int64
_MB = 1024 * 1024


class _CountedConnection(sqlite3.Connection):
    """A connection that can be weakly referenced (``sqlite3.Connection`` itself cannot)."""


_CONNECTIONS: weakref.WeakSet[_CountedConnection] = weakref.WeakSet()


def _count_connections() -> None:
    connect = sqlite3.connect

    def counted(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, factory=_CountedConnection, **kwargs)
        _CONNECTIONS.add(conn)
        return conn

    sqlite3.connect = counted  # type: ignore[assignment]


def _open_connections() -> int:
    count = 0
    for conn in list(_CONNECTIONS):
        try:
            conn.total_changes  # noqa: B018 (raises once the connection is closed)
        except sqlite3.ProgrammingError:
            continue
        count += 1
    return count


def _malloc_arenas() -> int:
    buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = _LIBC.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    _LIBC.malloc_info(0, stream)
    _LIBC.fclose(stream)
    text = (buffer.value or b"").decode()
    _LIBC.free(buffer)
    return len(re.findall(r"<heap nr=", text))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(started: float) -> dict[str, Any]:
    info = _LIBC.mallinfo2()
    names = collections.Counter(re.sub(r"[-_]?\d+.*$", "", t.name) for t in threading.enumerate())
    return {
        "t": round(time.monotonic() - started, 1),
        "unix": round(time.time(), 1),
        "rss_mb": round(_rss_mb(), 1),
        "sqlite_mb": round(_SQLITE.sqlite3_memory_used() / _MB, 1),
        "sqlite_connections": _open_connections(),
        "python_traced_mb": round(tracemalloc.get_traced_memory()[0] / _MB, 1) if tracemalloc.is_tracing() else None,
        "malloc": {
            "in_use_mb": round(info.uordblks / _MB, 1),
            "free_in_heaps_mb": round(info.fordblks / _MB, 1),
            "mmapped_mb": round(info.hblkhd / _MB, 1),
            "arenas": _malloc_arenas(),
        },
        "threads": dict(names),
        "os_threads": len(os.listdir("/proc/self/task")),
    }


def _probe(out: Path, every_seconds: float, warmup_seconds: float) -> None:
    started = time.monotonic()
    baseline: tracemalloc.Snapshot | None = None
    last_top = 0.0
    while True:
        time.sleep(every_seconds)
        with out.open("a") as f:
            f.write(json.dumps(sample(started)) + "\n")
        elapsed = time.monotonic() - started
        if not tracemalloc.is_tracing() or elapsed < warmup_seconds:
            continue
        if baseline is None:
            baseline, last_top = tracemalloc.take_snapshot(), elapsed
        elif elapsed - last_top >= 60:
            last_top = elapsed
            stats = tracemalloc.take_snapshot().compare_to(baseline, "lineno")
            lines = [f"{elapsed:.0f} s after start, growth since {warmup_seconds:.0f} s:"]
            lines += [str(stat) for stat in stats[:25]]
            out.with_suffix(".top.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = sys.argv[1:]
    out = Path(args.pop(0))
    if args and args[0] == "--tracemalloc":
        args.pop(0)
        tracemalloc.start(1)
    if args and args[0] == "--":
        args.pop(0)
    _count_connections()
    every = float(os.environ.get("RAGSERVE_PROBE_SECONDS", "10"))
    warmup = float(os.environ.get("RAGSERVE_PROBE_WARMUP_SECONDS", "120"))
    threading.Thread(target=_probe, args=(out, every, warmup), name="memory-probe", daemon=True).start()
    from ragserve.cli import app

    sys.argv = ["ragserve", *args]
    app()


if __name__ == "__main__":
    main()
