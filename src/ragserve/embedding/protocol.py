"""The embedding seam: text in, L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

EmbedKind = Literal["query", "document"]
Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """A sentence embedding model. Synchronous and CPU-bound: callers run it in a worker thread."""

    @property
    def model_id(self) -> str:
        """A stable name of the model and its preprocessing; part of every embedding cache key."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector ``embed`` returns."""
        ...

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        """Return an ``(len(texts), dimension)`` float32 array of unit vectors. Raises ``EmbeddingError``."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text, special tokens excluded and without truncation."""
        ...
