"""One index version's vectors at a reduced precision: a table of compact codes with their chunk ids, searched
by a scan, saved as one file beside the database.

A scan of codes is exact at its precision and restricts itself to the allowed ids before scoring, so a filter
(an ACL, metadata) never costs recall. It reads every code it may return: binary codes (48 bytes for 384
dimensions) are scanned at memory speed; int8 and f16 codes cost time linear in the collection
(``bench/vector_precision.py`` measures both).
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragserve.stores.protocol import Vectors
from ragserve.stores.vector_codes import QuantizedPrecision, approximate_scores, code_shape, encode, top_rows

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024


class CodeTable:
    """Codes of one index version's vectors, by chunk id. Callers hold ``lock`` around every method."""

    def __init__(self, path: Path, precision: QuantizedPrecision, dim: int) -> None:
        self.path = path
        self.precision: QuantizedPrecision = precision
        self.dim = dim
        self.lock = threading.Lock()
        self.dirty = False
        shape = code_shape(precision, dim)
        self._ids = np.zeros(_INITIAL_CAPACITY, dtype=np.int64)
        self._codes: npt.NDArray[np.generic] = np.zeros((_INITIAL_CAPACITY, shape.width), dtype=shape.dtype)
        self._scales = np.ones(_INITIAL_CAPACITY, dtype=np.float32)
        self._count = 0
        self.live: dict[int, int] = {}  # chunk id → row
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                precision, dim = str(saved["precision"]), int(saved["dim"])
                ids, codes, scales = saved["ids"], saved["codes"], saved["scales"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            # Derived data: catch-up re-adds every vector from the database.
            logger.warning("vector codes %s unreadable (%s): rebuilding them from the database", self.path, exc)
            return
        if (precision, dim) != (self.precision, self.dim) or codes.dtype != self._codes.dtype:
            logger.warning("vector codes %s are not %s/%d: rebuilding them", self.path, self.precision, self.dim)
            return
        self._grow(len(ids))
        self._ids[: len(ids)], self._codes[: len(ids)] = ids, codes
        if len(scales) == len(ids):  # only int8 saves its scales; the others' are ones
            self._scales[: len(ids)] = scales
        self._count = len(ids)
        self.live = {int(cid): row for row, cid in enumerate(ids)}

    def _grow(self, needed: int) -> None:
        capacity = len(self._ids)
        if needed <= capacity:
            return
        size = max(needed, capacity * 2)
        self._ids = np.resize(self._ids, size)
        self._scales = np.resize(self._scales, size)
        codes = np.zeros((size, self._codes.shape[1]), dtype=self._codes.dtype)
        codes[: self._count] = self._codes[: self._count]
        self._codes = codes

    def add(self, ids: Sequence[int], vectors: Vectors) -> None:
        """Code and store ``vectors``; an id already present gets its new vector."""
        codes, scales = encode(self.precision, vectors)
        self._grow(self._count + len(ids))
        for cid, code, scale in zip(ids, codes, scales, strict=True):
            row = self.live.get(int(cid))
            if row is None:
                row = self._count
                self._count += 1
                self.live[int(cid)] = row
                self._ids[row] = cid
            self._codes[row], self._scales[row] = code, scale
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        """Forget ``ids``; the last row moves into each freed one, so the table stays dense."""
        for cid in ids:
            row = self.live.pop(int(cid), None)
            if row is None:
                continue
            last = self._count - 1
            if row != last:
                moved = int(self._ids[last])
                self._ids[row], self._codes[row], self._scales[row] = moved, self._codes[last], self._scales[last]
                self.live[moved] = row
            self._count = last
            self.dirty = True

    def candidates(self, query: Vectors, n: int, allowed: Sequence[int] | None) -> list[int]:
        """The ``n`` ids nearest ``query`` at this precision, best first; only ``allowed`` ones if given."""
        if allowed is None:
            rows = np.arange(self._count)
            scores = approximate_scores(self.precision, self._codes[: self._count], self._scales[: self._count], query)
        else:
            rows = np.fromiter((r for r in map(self.live.get, allowed) if r is not None), dtype=np.intp)
            scores = approximate_scores(self.precision, self._codes[rows], self._scales[rows], query)
        return [int(self._ids[rows[i]]) for i in top_rows(scores, n)]

    def nbytes(self) -> int:
        """Bytes the codes, scales and ids of the live vectors take in memory."""
        shape = code_shape(self.precision, self.dim)
        return self._count * (shape.bytes_per_vector + self._ids.itemsize)

    def save(self) -> None:
        """Write the table atomically (a temporary file renamed over the old one)."""
        n = self._count
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            arrays: dict[str, npt.NDArray[np.generic]] = {
                "precision": np.array(self.precision),
                "dim": np.array(self.dim),
                "ids": self._ids[:n],
                "codes": self._codes[:n],
            }
            if code_shape(self.precision, self.dim).has_scale:
                arrays["scales"] = self._scales[:n]
            else:
                arrays["scales"] = np.ones(0, dtype=np.float32)
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, self.path)
        self.dirty = False
