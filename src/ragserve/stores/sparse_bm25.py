"""An in-memory copy of one FTS5 table's postings that ranks exactly as FTS5's ``bm25()``, in numpy.

FTS5 evaluates ``bm25()`` for every row that matches any query term before ``ORDER BY rank LIMIT k`` keeps
the best: at 100,000 chunks the keyword half dominated a hybrid search. Here a query is a few array slices, one
``np.bincount`` and a partial sort. The formula is FTS5's (``fts5_aux.c``, ``fts5Bm25Function``): k1 = 1.2,
b = 0.75, idf = ln((N - df + 0.5) / (df + 0.5)) clamped to 1e-6, freq = the column-weighted term count,
D = the row's tokens in all columns, avgdl = all tokens / N; terms are summed in the order FTS5 sums them
(the sorted query terms), so the scores agree to the last bit or nearly.

Row sizes come from FTS5's own ``_docsize`` table, and every term's (rows, instances) is checked against
FTS5's ``fts5vocab`` counts: a term whose counts differ (our whitespace split and FTS5's unicode61 tokenizer
would disagree only on characters their Unicode tables class differently) is *unsafe*, and a query holding
one, or a non-ASCII term the copy has never seen, returns None so that FTS5 answers it.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragserve.stores.sqlite_db import fts_table

K1 = 1.2
B = 0.75
_ASCII_TERM = re.compile(r"[a-z0-9]+")  # a single unicode61 token whatever SQLite's Unicode tables say
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class Bm25Snapshot:
    """One FTS5 table at one generation. Postings of term id t are positions ``offsets[t]:offsets[t + 1]``
    of ``rows`` (row positions, ascending; ``rowids[row]`` is the chunk id), ``title_tf`` and ``body_tf``."""

    generation: int
    term_ids: dict[str, int]
    offsets: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]
    title_tf: npt.NDArray[np.uint16]
    body_tf: npt.NDArray[np.uint16]
    rowids: npt.NDArray[np.int64]
    length_norm: npt.NDArray[np.float64]  # k1 * (1 - b + b * D / avgdl) per row
    unsafe: frozenset[str]

    @property
    def row_count(self) -> int:
        return int(self.rowids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays plus an estimate of the term dictionary (about 100 bytes an entry)."""
        arrays = (self.offsets, self.rows, self.title_tf, self.body_tf, self.rowids, self.length_norm)
        return sum(int(a.nbytes) for a in arrays) + 100 * len(self.term_ids)

    def _term_id(self, term: str) -> int | None:
        """The term's id; -1 for a term no row holds; None when FTS5 must answer (see the module docstring)."""
        if term in self.unsafe:
            return None
        found = self.term_ids.get(term)
        if found is not None:
            return found
        return -1 if _ASCII_TERM.fullmatch(term) else None

    def chunk_counts(self, terms: Sequence[str]) -> dict[str, int] | None:
        """Rows holding each term (terms no row holds are left out, as FTS5's vocabulary leaves them out)."""
        counts: dict[str, int] = {}
        for term in sorted(set(terms)):
            tid = self._term_id(term)
            if tid is None:
                return None
            if tid >= 0:
                counts[term] = int(self.offsets[tid + 1] - self.offsets[tid])
        return counts

    def search(self, terms: Sequence[str], k: int, title_weight: float) -> list[tuple[int, float]] | None:
        """The ``k`` best (chunk id, bm25) for rows holding any term, best first, ties by chunk id as FTS5's
        stable sort leaves them; None when FTS5 must answer."""
        n = self.row_count
        parts_rows: list[npt.NDArray[np.int32]] = []
        parts_scores: list[npt.NDArray[np.float64]] = []
        for term in sorted(set(terms)):
            tid = self._term_id(term)
            if tid is None:
                return None
            if tid < 0:
                continue
            lo, hi = int(self.offsets[tid]), int(self.offsets[tid + 1])
            idf = math.log((n - (hi - lo) + 0.5) / ((hi - lo) + 0.5))
            if idf <= 0.0:
                idf = 1e-6
            rows = self.rows[lo:hi]
            freq = self.title_tf[lo:hi] * title_weight + self.body_tf[lo:hi]
            parts_rows.append(rows)
            parts_scores.append(idf * (freq * (K1 + 1.0)) / (freq + self.length_norm[rows]))
        if not parts_rows or k <= 0:
            return []
        scores = np.bincount(np.concatenate(parts_rows), weights=np.concatenate(parts_scores), minlength=n)
        matched = np.flatnonzero(scores)  # every match scores > 0: idf >= 1e-6 and freq > 0
        if matched.shape[0] > k:
            candidates = scores[matched]
            kth = np.partition(candidates, matched.shape[0] - k)[matched.shape[0] - k]
            matched = matched[candidates >= kth]  # ties at the k-th score are all kept, then cut below
        order = np.lexsort((matched, -scores[matched]))[:k]
        best = matched[order]
        return list(zip(self.rowids[best].tolist(), scores[best].tolist(), strict=True))


def read_snapshot(conn: sqlite3.Connection, index_id: str, generation: int) -> Bm25Snapshot:
    """Copy the index's FTS5 table in one read transaction. ``generation`` is the table's generation read
    before this call (``fts_generations.py``). Raises ``sqlite3.Error`` (e.g. the table was dropped)."""
    fts = fts_table(index_id)
    conn.execute(f'CREATE VIRTUAL TABLE IF NOT EXISTS temp."{fts}_terms" USING fts5vocab(main, "{fts}", row)')
    conn.execute("BEGIN")
    try:
        rowids, sizes = _row_sizes(conn, fts)
        term_ids, keys, counts = _postings(conn, fts, rowids)
        vocabulary = conn.execute(f'SELECT term, doc, cnt FROM temp."{fts}_terms"').fetchall()
    finally:
        conn.execute("COMMIT")
    n = rowids.shape[0]
    # keys = (term * n + row) * 2 + column, unique and sorted: a (term, row)'s title entry precedes its body's.
    pair = keys // 2
    is_first = np.ones(pair.shape[0], dtype=bool)
    is_first[1:] = pair[1:] != pair[:-1]
    group = np.cumsum(is_first) - 1
    is_title = (keys % 2) == 0
    title_tf = np.bincount(group, weights=counts * is_title).astype(np.uint16)
    body_tf = np.bincount(group, weights=counts * ~is_title).astype(np.uint16)
    firsts = pair[is_first]
    terms_of = firsts // max(n, 1)
    offsets = np.searchsorted(terms_of, np.arange(len(term_ids) + 1)).astype(np.int64)
    avgdl = float(sizes.sum()) / n if n else 1.0
    unsafe = _unsafe_terms(term_ids, offsets, title_tf.astype(np.int64) + body_tf, vocabulary)
    return Bm25Snapshot(
        generation=generation,
        term_ids=term_ids,
        offsets=offsets,
        rows=(firsts % max(n, 1)).astype(np.int32),
        title_tf=title_tf,
        body_tf=body_tf,
        rowids=rowids,
        length_norm=K1 * (1 - B + B * sizes.astype(np.float64) / avgdl),
        unsafe=unsafe,
    )


def _row_sizes(conn: sqlite3.Connection, fts: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row ids ascending and each row's tokens over all columns, from FTS5's ``_docsize`` (varints)."""
    rowids: list[int] = []
    sizes: list[int] = []
    for rowid, blob in conn.execute(f"SELECT id, sz FROM {fts}_docsize ORDER BY id"):
        rowids.append(int(rowid))
        sizes.append(_varint_sum(bytes(blob)))
    return np.asarray(rowids, dtype=np.int64), np.asarray(sizes, dtype=np.int64)


def _varint_sum(blob: bytes) -> int:
    """The sum of SQLite varints (big-endian 7-bit groups, the 9th byte whole) packed in ``blob``."""
    total, value, used = 0, 0, 0
    for byte in blob:
        used += 1
        if used == 9:
            total, value, used = total + ((value << 8) | byte), 0, 0
        elif byte & 0x80:
            value = (value << 7) | (byte & 0x7F)
        else:
            total, value, used = total + ((value << 7) | byte), 0, 0
    return total


def _postings(
    conn: sqlite3.Connection, fts: str, rowids: npt.NDArray[np.int64]
) -> tuple[dict[str, int], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Term ids, and the sorted unique keys (term * n + row) * 2 + column with their token counts."""
    n = max(int(rowids.shape[0]), 1)
    term_ids: dict[str, int] = {}
    add = term_ids.setdefault
    batches: list[npt.NDArray[np.int64]] = []
    cursor = conn.execute(f"SELECT rowid, title, body FROM {fts} ORDER BY rowid")
    position = 0
    while chunk := cursor.fetchmany(_BATCH_ROWS):
        ids: list[int] = []
        slots: list[int] = []
        for rowid, title, body in chunk:
            if rowids[position] != rowid:  # content and docsize are written together; a mismatch is corruption
                raise sqlite3.DatabaseError(f"{fts}: row {rowid} has no size record")
            for column, text in ((0, title), (1, body)):
                tokens = (text or "").split()
                ids.extend([add(t, len(term_ids)) for t in tokens])
                slots.extend([position * 2 + column] * len(tokens))
            position += 1
        batches.append(np.asarray(ids, dtype=np.int64) * (2 * n) + np.asarray(slots, dtype=np.int64))
    if position != rowids.shape[0]:
        raise sqlite3.DatabaseError(f"{fts}: {rowids.shape[0] - position} size records without a row")
    if not batches:
        return term_ids, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    keys, counts = np.unique(np.concatenate(batches), return_counts=True)
    return term_ids, keys, counts.astype(np.float64)


def _unsafe_terms(
    term_ids: dict[str, int],
    offsets: npt.NDArray[np.int64],
    tf: npt.NDArray[np.int64],
    vocabulary: list[tuple[str, int, int]],
) -> frozenset[str]:
    """Terms whose (rows, instances) differ from FTS5's, and FTS5's terms this copy lacks."""
    instances = np.add.reduceat(tf, offsets[:-1]) if tf.shape[0] else np.zeros(0, dtype=np.int64)
    df = np.diff(offsets)
    unseen = set(term_ids)
    unsafe: set[str] = set()
    for term, doc, cnt in vocabulary:
        tid = term_ids.get(term)
        unseen.discard(term)
        if tid is None or int(df[tid]) != doc or int(instances[tid]) != cnt:
            unsafe.add(term)
    return frozenset(unsafe | unseen)
