"""Compact codes of unit vectors for the embedded index's reduced precisions, and the approximate inner
products a query has with them.

``f16`` halves each component. ``int8`` keeps each vector as 8-bit integers times one float32 scale of its own
(symmetric, ``max |x| / 127``): a scale per vector needs no calibration on a sample, so vectors added one batch
at a time are coded exactly as a bulk build would code them. ``binary`` keeps the sign of each component, one
bit each; its score is the number of signs a vector shares with the query (``dim - 2 * Hamming distance``), a
coarse order that only picks candidates. Every approximate score is rescored at full precision before anyone
sees it (``HnswVectorIndex``), so these numbers never reach fusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ragserve.domain import VectorPrecision
from ragserve.stores.protocol import Vectors

QuantizedPrecision = Literal["f16", "int8", "binary"]

_INT8_MAX = 127.0
# Set bits of every byte value: Hamming distance on NumPy older than 2.0, which lacks ``bitwise_count``.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class CodeShape:
    """The layout of one vector's code: its dtype, its width in elements, and whether it has a scale."""

    dtype: np.dtype[np.generic]
    width: int
    has_scale: bool

    @property
    def bytes_per_vector(self) -> int:
        return self.width * self.dtype.itemsize + (4 if self.has_scale else 0)


def is_quantized(precision: VectorPrecision) -> bool:
    return precision != "f32"


def code_shape(precision: QuantizedPrecision, dim: int) -> CodeShape:
    if precision == "f16":
        return CodeShape(np.dtype(np.float16), dim, has_scale=False)
    if precision == "int8":
        return CodeShape(np.dtype(np.int8), dim, has_scale=True)
    return CodeShape(np.dtype(np.uint8), (dim + 7) // 8, has_scale=False)


def encode(precision: QuantizedPrecision, vectors: Vectors) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]:
    """Codes of ``vectors`` (one row each) and their scales (ones where the precision has none)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    ones = np.ones(len(matrix), dtype=np.float32)
    if precision == "f16":
        return matrix.astype(np.float16), ones
    if precision == "binary":
        return np.packbits(matrix > 0, axis=1), ones
    peak = np.abs(matrix).max(axis=1) if matrix.shape[1] else np.zeros(len(matrix), dtype=np.float32)
    scales = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
    codes = np.clip(np.rint(matrix / scales[:, None]), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return codes, scales


def approximate_scores(
    precision: QuantizedPrecision,
    codes: npt.NDArray[np.generic],
    scales: npt.NDArray[np.float32],
    query: Vectors,
) -> npt.NDArray[np.float32]:
    """Approximate similarity of ``query`` to each coded vector, higher is closer (an order, not a scale)."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if precision == "binary":
        signs = np.packbits(q > 0)
        return (len(q) - 2 * _hamming(codes.view(np.uint8), signs)).astype(np.float32)
    # einsum widens the codes as it goes (no float32 copy of them) in one thread: a BLAS product would need
    # the copy, and its threads slowed this scan tenfold on busy cores (bench/vector_precision.py).
    scores: npt.NDArray[np.float32] = np.einsum("ij,j->i", codes, q, dtype=np.float32, casting="unsafe")
    if precision == "int8":
        scores *= scales
    return scores


def _hamming(codes: npt.NDArray[np.uint8], signs: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    count = getattr(np, "bitwise_count", None)
    if count is None:
        return np.asarray(_POPCOUNT[np.bitwise_xor(codes, signs)].sum(axis=1, dtype=np.int64))
    if codes.shape[1] % 8 == 0:  # eight bytes at a time: a sixth of the work at 384 dimensions
        codes = np.ascontiguousarray(codes).view(np.uint64)
        signs = np.ascontiguousarray(signs).view(np.uint64)
    return np.asarray(np.asarray(count(np.bitwise_xor(codes, signs)), dtype=np.int64).sum(axis=1))


def top_rows(scores: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.intp]:
    """Indices of the ``n`` highest scores, best first."""
    if n <= 0 or not len(scores):
        return np.zeros(0, dtype=np.intp)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]
