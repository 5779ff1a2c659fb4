"""Dynamic micro-batching: concurrent ``embed`` calls from many threads merged into few model runs.

``MicroBatcher`` wraps another ``Embedder`` and implements the same Protocol. Callers put their texts on a
queue per kind and block on futures. Two batching threads, one per kind (the wrapped ``embed`` takes one
kind per call), each take a batch from their queue, run the wrapped model once and hand each caller its rows.

Queries first: a document batch starts only while no query is queued, and document calls are cut into pieces
of at most ``max_document_batch`` texts, so ingestion yields to queries between small batches. A query never
waits for a document batch: on CPU, ONNX Runtime shares the cores between a query batch and the one document
batch beside it, which measured far faster than queueing the query behind that batch (bench/README.md).

The window: when more than one call is queued, the batch waits until its oldest text has waited
``window_ms`` (or the batch is full) for more to join. A call that finds nothing else queued runs at once,
so a lone query on a quiet service pays no window at all (measured in ``bench/micro_batching.py``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ragserve.embedding.protocol import Embedder, EmbedKind, Vectors
from ragserve.errors import EmbeddingError
from ragserve.observability.metrics import EMBEDDING_BATCH_TEXTS, EMBEDDING_QUEUE_WAIT

_KINDS: tuple[EmbedKind, ...] = ("query", "document")


@dataclass(slots=True)
class _Piece:
    """Consecutive texts of one call, at most one batch of them, answered through ``future``."""

    texts: Sequence[str]
    arrived: float = field(default_factory=time.monotonic)
    future: Future[Vectors] = field(default_factory=Future)
    call: list[_Piece] = field(default_factory=list)  # every piece of the same call, this one included


class MicroBatcher:
    """An ``Embedder`` that batches concurrent calls to ``inner`` in background threads, queries first.

    ``window_ms`` (0..50) is the longest a queued text waits for others to join its batch; ``max_batch``
    caps the texts of a query batch, ``max_document_batch`` those of a document batch. Vectors equal
    ``inner``'s. ``embed`` raises ``EmbeddingError`` when the model run holding its texts failed or the
    batcher is closed; ``ValueError`` for a setting out of range. ``close()`` never closes ``inner``.
    """

    def __init__(
        self, inner: Embedder, *, window_ms: float = 10.0, max_batch: int = 64, max_document_batch: int = 4
    ) -> None:
        if not 0 <= window_ms <= 50:
            raise ValueError(f"window_ms must be within 0..50, got {window_ms}")
        if not 1 <= max_document_batch <= max_batch:
            raise ValueError(f"need 1 <= max_document_batch <= max_batch, got {max_document_batch} and {max_batch}")
        self._inner = inner
        self._window_seconds = window_ms / 1000
        self._max_texts: dict[EmbedKind, int] = {"query": max_batch, "document": max_document_batch}
        self._queues: dict[EmbedKind, deque[_Piece]] = {kind: deque() for kind in _KINDS}
        self._changed = threading.Condition()
        self._is_closed = False
        self._threads = [
            threading.Thread(target=self._serve, args=(kind,), name=f"embedding-batcher-{kind}", daemon=True)
            for kind in _KINDS
        ]
        for thread in self._threads:
            thread.start()

    @property
    def inner(self) -> Embedder:
        """The wrapped embedder, which runs every batch."""
        return self._inner

    @property
    def model_id(self) -> str:
        """The wrapped model's id: batching does not change a vector."""
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def queued_texts(self) -> int:
        """Texts waiting for a batch now; those of the batch being run are not counted."""
        with self._changed:
            return sum(len(piece.texts) for queue in self._queues.values() for piece in queue)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The wrapped embedder's count, called directly: tokenising needs no batching."""
        return self._inner.count_tokens(texts)

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        """Queue ``texts`` and block until every piece of them is embedded; rows in the order of ``texts``.

        Raises ``EmbeddingError`` if a batch holding them failed or the batcher is closed.
        """
        if not texts:
            return np.zeros((0, self._inner.dimension), dtype=np.float32)
        size = self._max_texts[kind]
        pieces = [_Piece(texts[i : i + size]) for i in range(0, len(texts), size)]
        for piece in pieces:
            piece.call = pieces
        with self._changed:
            if self._is_closed:
                raise EmbeddingError("the embedding batcher is closed")
            self._queues[kind].extend(pieces)
            self._changed.notify_all()
        try:
            rows = [piece.future.result() for piece in pieces]
        except BaseException:
            for piece in pieces:
                piece.future.cancel()
            raise
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def close(self) -> None:
        """Stop the batching threads after the batches they are running; calls still queued raise
        ``EmbeddingError``. Idempotent."""
        with self._changed:
            self._is_closed = True
            pending = [piece for queue in self._queues.values() for piece in queue]
            for queue in self._queues.values():
                queue.clear()
            self._changed.notify_all()
        for piece in pending:
            if piece.future.set_running_or_notify_cancel():
                piece.future.set_exception(EmbeddingError("the embedding batcher was closed before this call ran"))
        for thread in self._threads:
            thread.join()

    def _serve(self, kind: EmbedKind) -> None:
        while (batch := self._next_batch(kind)) is not None:
            self._run(kind, batch)

    def _next_batch(self, kind: EmbedKind) -> list[_Piece] | None:
        """Wait for a batch of ``kind`` to be due, then take it; ``None`` once closed."""
        with self._changed:
            while True:
                if self._is_closed:
                    return None
                if not self._queues[kind] or (kind == "document" and self._queues["query"]):
                    self._changed.wait()
                    continue
                wait_seconds = self._wait_seconds(kind)
                if wait_seconds > 0:
                    # Woken early by any new call: the batch may be full, or a query may have arrived.
                    self._changed.wait(wait_seconds)
                    continue
                batch = self._take(kind)
                # Taking queries may have emptied their queue: the document thread may go on.
                self._changed.notify_all()
                if batch:
                    return batch

    def _wait_seconds(self, kind: EmbedKind) -> float:
        """How much longer the queued texts of ``kind`` should wait for more; 0 or less: run them now."""
        queue = self._queues[kind]
        if len(queue) == 1 or sum(len(piece.texts) for piece in queue) >= self._max_texts[kind]:
            return 0.0
        return queue[0].arrived + self._window_seconds - time.monotonic()

    def _take(self, kind: EmbedKind) -> list[_Piece]:
        """Whole pieces of ``kind``, oldest first, up to a batch of texts; skips pieces their caller gave up."""
        queue = self._queues[kind]
        batch: list[_Piece] = []
        size = 0
        while queue and size + len(queue[0].texts) <= self._max_texts[kind]:
            piece = queue.popleft()
            if piece.future.set_running_or_notify_cancel():
                batch.append(piece)
                size += len(piece.texts)
        return batch

    def _run(self, kind: EmbedKind, batch: list[_Piece]) -> None:
        texts = [text for piece in batch for text in piece.texts]
        started = time.monotonic()
        for piece in batch:
            EMBEDDING_QUEUE_WAIT.labels(kind=kind).observe(started - piece.arrived)
        EMBEDDING_BATCH_TEXTS.labels(kind=kind).observe(len(texts))
        try:
            vectors = self._inner.embed(texts, kind=kind)
        except Exception as exc:
            # Exactly this batch's callers fail, each with its own exception object (they raise in parallel).
            for piece in batch:
                error = EmbeddingError(f"embedding a batch of {len(texts)} texts failed: {exc}")
                error.__cause__ = exc
                piece.future.set_exception(error)
                # The rest of a failed call is dropped, not embedded for nobody: ``_take`` skips cancelled pieces.
                for sibling in piece.call:
                    sibling.future.cancel()
            return
        start = 0
        for piece in batch:
            piece.future.set_result(vectors[start : start + len(piece.texts)])
            start += len(piece.texts)
