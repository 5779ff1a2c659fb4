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
_BATCH_ROWS = 2048


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
        spans: list[tuple[int, int, float]] = []
        for term in sorted(set(terms)):
            tid = self._term_id(term)
            if tid is None:
                return None
            if tid < 0:
                continue
            lo, hi = int(self.offsets[tid]), int(self.offsets[tid + 1])
            idf = math.log((n - (hi - lo) + 0.5) / ((hi - lo) + 0.5))
            spans.append((lo, hi, 1e-6 if idf <= 0.0 else idf))
        if not spans or k <= 0:
            return []
        postings, weights = self._postings(spans, title_weight)
        scores = np.bincount(postings, weights=weights, minlength=n).astype(np.float64, copy=False)
        matched = _best_rows(postings, scores, k * len(spans))
        order = np.lexsort((matched, -scores[matched]))[:k]
        best = matched[order]
        return list(zip(self.rowids[best].tolist(), scores[best].tolist(), strict=True))

    def _postings(
        self, spans: list[tuple[int, int, float]], title_weight: float
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]:
        """The rows of the terms' postings ``(lo, hi, idf)``, in that order, and each posting's BM25 term
        score ``idf * (freq * (k1 + 1)) / (freq + length_norm)``, written in place: the same operations in the
        same order as the formula, so the same bits, without a temporary array per operation."""
        total = sum(hi - lo for lo, hi, _ in spans)
        postings = np.empty(total, dtype=np.int32)
        weights = np.empty(total, dtype=np.float64)
        at = 0
        for lo, hi, idf in spans:
            rows = postings[at : at + hi - lo]
            rows[:] = self.rows[lo:hi]
            freq = np.multiply(self.title_tf[lo:hi], title_weight, dtype=np.float64)
            freq += self.body_tf[lo:hi]
            score = weights[at : at + hi - lo]
            np.multiply(freq, K1 + 1.0, out=score)
            score *= idf
            denominator = self.length_norm[rows]
            denominator += freq
            score /= denominator
            at += hi - lo
        return postings, weights


def _best_rows(postings: npt.NDArray[np.int32], scores: npt.NDArray[np.float64], entries: int) -> npt.NDArray[np.int32]:
    """The distinct rows of ``postings`` (rows, each listed once per query term it holds) whose scores reach
    the ``entries``-th best entry's: a superset of the k best rows, ties included, for ``entries`` = k x terms.

    The k-th best row scores v; at most k x terms entries score above v (a row has one entry per term), so
    the ``entries``-th best entry is at most v. Working on the postings, not on all ``scores``, keeps a query's
    cost in proportion to the postings it reads rather than to the rows of the table."""
    if postings.shape[0] > entries:
        values = scores[postings]
        cut = postings.shape[0] - entries
        postings = postings[values >= np.partition(values, cut)[cut]]
    return np.unique(postings)


def read_snapshot(conn: sqlite3.Connection, index_id: str, generation: int) -> Bm25Snapshot:
    """Copy the index's FTS5 table in one read transaction. ``generation`` is the table's generation read
    before this call (``fts_generations.py``). Raises ``sqlite3.Error`` (e.g. the table was dropped)."""
    fts = fts_table(index_id)
    conn.execute(f'CREATE VIRTUAL TABLE IF NOT EXISTS temp."{fts}_terms" USING fts5vocab(main, "{fts}", row)')
    conn.execute("BEGIN")
    try:
        rowids, sizes = _row_sizes(conn, fts)
        term_ids, batches = _batch_postings(conn, fts, rowids)
        vocabulary = conn.execute(f'SELECT term, doc, cnt FROM temp."{fts}_terms"').fetchall()
    finally:
        conn.execute("COMMIT")
    offsets, rows, title_tf, body_tf, instances = _place(batches, len(term_ids))
    n = rowids.shape[0]
    avgdl = float(sizes.sum()) / n if n else 1.0
    return Bm25Snapshot(
        generation=generation,
        term_ids=term_ids,
        offsets=offsets,
        rows=rows,
        title_tf=title_tf,
        body_tf=body_tf,
        rowids=rowids,
        length_norm=K1 * (1 - B + B * sizes.astype(np.float64) / avgdl),
        unsafe=_unsafe_terms(term_ids, np.diff(offsets), instances, vocabulary),
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


@dataclass(frozen=True)
class _Batch:
    """Postings of consecutive rows, sorted by (term, row)."""

    terms: npt.NDArray[np.int32]
    rows: npt.NDArray[np.int32]
    title_tf: npt.NDArray[np.uint16]
    body_tf: npt.NDArray[np.uint16]


def _batch_postings(
    conn: sqlite3.Connection, fts: str, rowids: npt.NDArray[np.int64]
) -> tuple[dict[str, int], list[_Batch]]:
    """Term ids, and the table's postings in batches of ``_BATCH_ROWS`` rows (positions into ``rowids``)."""
    term_ids: dict[str, int] = {}
    add = term_ids.setdefault
    batches: list[_Batch] = []
    cursor = conn.execute(f"SELECT rowid, title, body FROM {fts} ORDER BY rowid")
    position = 0
    while chunk := cursor.fetchmany(_BATCH_ROWS):
        ids: list[int] = []
        slots: list[int] = []  # row in the batch * 2 + column
        for offset, (rowid, title, body) in enumerate(chunk):
            if position + offset >= rowids.shape[0] or rowids[position + offset] != rowid:
                raise sqlite3.DatabaseError(f"{fts}: row {rowid} has no size record")  # written together
            for column, text in ((0, title), (1, body)):
                tokens = (text or "").split()
                ids.extend([add(t, len(term_ids)) for t in tokens])
                slots.extend([offset * 2 + column] * len(tokens))
        keys = np.asarray(ids, dtype=np.int64) * (2 * len(chunk)) + np.asarray(slots, dtype=np.int64)
        batches.append(_batch(keys, len(chunk), position))
        position += len(chunk)
    if position != rowids.shape[0]:
        raise sqlite3.DatabaseError(f"{fts}: {rowids.shape[0] - position} size records without a row")
    return term_ids, batches


def _batch(keys: npt.NDArray[np.int64], batch_rows: int, first_row: int) -> _Batch:
    """Token keys (term * batch_rows + row) * 2 + column, one per token, counted into term frequencies."""
    unique, counts = np.unique(keys, return_counts=True)
    counts = np.minimum(counts, np.iinfo(np.uint16).max)  # a larger count fails the check against FTS5
    pair = unique // 2
    is_first = np.ones(pair.shape[0], dtype=bool)
    is_first[1:] = pair[1:] != pair[:-1]
    group = np.cumsum(is_first) - 1
    is_title = (unique % 2) == 0
    title_tf = np.zeros(int(is_first.sum()), dtype=np.uint16)
    body_tf = np.zeros_like(title_tf)
    title_tf[group[is_title]] = counts[is_title]  # a (term, row) has at most one entry per column
    body_tf[group[~is_title]] = counts[~is_title]
    firsts = pair[is_first]
    return _Batch(
        terms=(firsts // batch_rows).astype(np.int32),
        rows=(firsts % batch_rows + first_row).astype(np.int32),
        title_tf=title_tf,
        body_tf=body_tf,
    )


def _place(
    batches: list[_Batch], vocabulary_size: int
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.uint16], npt.NDArray[np.uint16], npt.NDArray[np.int64]
]:
    """Term offsets, postings (rows, title tf, body tf) and each term's instances, from the batches (emptied).

    Batches hold ascending rows, each sorted by (term, row): placing batch after batch at each term's cursor
    leaves every term's postings in row order without sorting them all at once (a third of the memory)."""
    df = np.zeros(vocabulary_size, dtype=np.int64)
    for batch in batches:
        df += np.bincount(batch.terms, minlength=vocabulary_size)
    offsets = np.zeros(vocabulary_size + 1, dtype=np.int64)
    np.cumsum(df, out=offsets[1:])
    total = int(offsets[-1])
    rows = np.empty(total, dtype=np.int32)
    title_tf = np.empty(total, dtype=np.uint16)
    body_tf = np.empty(total, dtype=np.uint16)
    instances = np.zeros(vocabulary_size, dtype=np.int64)
    cursor = offsets[:-1].copy()
    batches.reverse()
    while batches:
        batch = batches.pop()  # freed as it is placed
        within = np.arange(batch.terms.shape[0]) - np.searchsorted(batch.terms, batch.terms)
        places = cursor[batch.terms] + within
        rows[places], title_tf[places], body_tf[places] = batch.rows, batch.title_tf, batch.body_tf
        cursor += np.bincount(batch.terms, minlength=vocabulary_size)
        tf = batch.title_tf.astype(np.int64) + batch.body_tf
        instances += np.bincount(batch.terms, weights=tf, minlength=vocabulary_size).astype(np.int64)
    return offsets, rows, title_tf, body_tf, instances


def _unsafe_terms(
    term_ids: dict[str, int],
    df: npt.NDArray[np.int64],
    instances: npt.NDArray[np.int64],
    vocabulary: list[tuple[str, int, int]],
) -> frozenset[str]:
    """Terms whose (rows, instances) differ from FTS5's, and FTS5's terms this copy lacks."""
    unseen = set(term_ids)
    unsafe: set[str] = set()
    for term, doc, cnt in vocabulary:
        tid = term_ids.get(term)
        unseen.discard(term)
        if tid is None or int(df[tid]) != doc or int(instances[tid]) != cnt:
            unsafe.add(term)
    return frozenset(unsafe | unseen)
