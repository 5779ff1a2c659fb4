"""Vector codes of the reduced precisions: how close their approximate scores come, the code table's rows,
files and bytes, and rescoring (scores a caller sees are full-precision inner products at every precision)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ragserve.errors import NotFoundError, StoreError
from ragserve.settings import VectorIndexSettings
from ragserve.stores.code_table import CodeTable
from ragserve.stores.hnsw import HnswVectorIndex, index_path
from ragserve.stores.vector_codes import QuantizedPrecision, approximate_scores, code_shape, encode, top_rows

DIM = 384
QUANTIZED: tuple[QuantizedPrecision, ...] = ("f16", "int8", "binary")


def _unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(("precision", "tolerance"), [("f16", 1e-3), ("int8", 1e-2)])
def test_f16_and_int8_scores_approximate_the_inner_product(precision: QuantizedPrecision, tolerance: float) -> None:
    vectors, query = _unit(500), _unit(1, seed=1)[0]
    codes, scales = encode(precision, vectors)
    approx = approximate_scores(precision, codes, scales, query)
    assert np.abs(approx - vectors @ query).max() < tolerance


def test_int8_codes_use_the_full_range_with_one_scale_per_vector() -> None:
    vectors = _unit(50) * np.linspace(0.1, 1.0, 50, dtype=np.float32)[:, None]  # very different magnitudes
    codes, scales = encode("int8", vectors)
    assert codes.dtype == np.int8
    assert (np.abs(codes).max(axis=1) == 127).all()
    np.testing.assert_allclose(codes * scales[:, None], vectors, atol=float(scales.max()) / 2 + 1e-7)
    zero_codes, zero_scales = encode("int8", np.zeros((1, 8), dtype=np.float32))
    assert not zero_codes.any()
    assert np.isfinite(zero_scales).all()


def test_binary_score_counts_the_signs_shared_with_the_query() -> None:
    vectors, query = _unit(200, dim=100), _unit(1, dim=100, seed=2)[0]  # 100 bits: not a multiple of 64
    codes, scales = encode("binary", vectors)
    assert codes.shape == (200, 13)
    shared = ((vectors > 0) == (query > 0)).sum(axis=1)
    expected = shared - (100 - shared)
    np.testing.assert_array_equal(approximate_scores("binary", codes, scales, query), expected)
    codes384, scales384 = encode("binary", _unit(10))
    q = _unit(1, seed=3)[0]
    shared384 = ((_unit(10) > 0) == (q > 0)).sum(axis=1)
    np.testing.assert_array_equal(approximate_scores("binary", codes384, scales384, q), 2 * shared384 - DIM)


def test_code_bytes_per_vector() -> None:
    assert [code_shape(p, DIM).bytes_per_vector for p in QUANTIZED] == [768, 388, 48]


def test_top_rows_are_best_first_and_bounded() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7], dtype=np.float32)
    assert top_rows(scores, 2).tolist() == [1, 3]
    assert top_rows(scores, 10).tolist() == [1, 3, 2, 0]
    assert top_rows(scores, 0).tolist() == []


@pytest.mark.parametrize("precision", QUANTIZED)
def test_code_table_keeps_rows_dense_through_deletes_and_replacements(
    tmp_path: Path, precision: QuantizedPrecision
) -> None:
    vectors = _unit(100)
    table = CodeTable(tmp_path / "t.codes", precision, DIM)
    table.add(list(range(100)), vectors)
    table.remove([0, 50, 99, 1234])
    assert set(table.live) == set(range(100)) - {0, 50, 99}
    assert sorted(table.live.values()) == list(range(97))  # the last rows moved into the freed ones
    for i in (1, 49, 98):
        assert table.candidates(vectors[i], 1, None) == [i]
    table.add([7], vectors[60:61])  # a new vector for an existing id
    assert set(table.candidates(vectors[60], 2, None)) == {7, 60}
    assert table.candidates(vectors[60], 5, [7, 8, 9])[0] == 7
    assert table.candidates(vectors[60], 5, [0, 50]) == []  # deleted ids pass no filter
    assert table.nbytes() == 97 * (code_shape(precision, DIM).bytes_per_vector + 8)


@pytest.mark.parametrize("precision", QUANTIZED)
def test_code_table_saves_and_loads(tmp_path: Path, precision: QuantizedPrecision) -> None:
    vectors = _unit(300, seed=4)
    path = tmp_path / "t.codes"
    table = CodeTable(path, precision, DIM)
    table.add(list(range(1000, 1300)), vectors)
    table.remove([1000])
    table.save()
    assert not table.dirty
    loaded = CodeTable(path, precision, DIM)
    assert loaded.live == table.live
    assert loaded.candidates(vectors[5], 10, None) == table.candidates(vectors[5], 10, None)
    # Another precision's (or a damaged) file is not trusted: the table starts empty and catch-up refills it.
    other = "int8" if precision != "int8" else "f16"
    assert CodeTable(path, other, DIM).live == {}
    path.write_bytes(b"not a zip file")
    assert CodeTable(path, precision, DIM).live == {}


class StoredVectors:
    """The database's float32 vectors, as ``ChunkStore.chunk_vectors`` reads them (unknown ids raise)."""

    def __init__(self) -> None:
        self.rows: dict[int, np.ndarray] = {}

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        missing = [i for i in ids if i not in self.rows]
        if missing:
            raise NotFoundError(f"{len(missing)} chunk vectors not found")
        return np.stack([self.rows[i] for i in ids])


@pytest.mark.parametrize("precision", QUANTIZED)
def test_rescoring_returns_full_precision_scores_and_skips_chunks_gone_from_the_database(
    tmp_path: Path, precision: QuantizedPrecision
) -> None:
    vectors, query = _unit(400, seed=5), _unit(1, seed=6)[0]
    stored = StoredVectors()
    stored.rows = dict(enumerate(vectors))
    # Every vector a candidate: the rescored order is the exact order, whatever the codes' own order was.
    settings = VectorIndexSettings(precision=precision, rescore_min_candidates=400)
    index = HnswVectorIndex(tmp_path, DIM, settings, full_vectors=stored)
    index.upsert("c", list(range(400)), vectors)
    hits = index.search("c", query, 10)
    exact = vectors @ query
    assert [cid for cid, _ in hits] == list(np.argsort(-exact)[:10])
    assert [score for _, score in hits] == pytest.approx([float(exact[cid]) for cid, _ in hits], abs=1e-6)
    # A chunk deleted from the database before the index heard of it is dropped, not an error.
    best = hits[0][0]
    del stored.rows[best]
    assert best not in {cid for cid, _ in index.search("c", query, 10)}


def test_a_quantized_index_needs_stored_vectors_and_has_its_own_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="int8"):
        HnswVectorIndex(tmp_path, DIM, VectorIndexSettings(precision="int8")).upsert("c", [1], _unit(1))
    precisions = {"a": "binary", "b": "f32"}
    index = HnswVectorIndex(
        tmp_path, DIM, VectorIndexSettings(precision="int8"), precision_of=precisions.get, full_vectors=StoredVectors()
    )
    for cid in ("a", "b", "c"):
        index.upsert(cid, [1], _unit(1))
    index.flush()
    assert index_path(tmp_path, "a", "binary").exists()
    assert index_path(tmp_path, "b", "f32") == tmp_path / "b.hnsw"
    assert (tmp_path / "b.hnsw").exists()
    assert index_path(tmp_path, "c", "int8").exists()  # unknown to the database: the setting's precision
    assert index.index_bytes("a") > 0
    assert index.memory_bytes("a") == 48 + 8
    assert index.memory_bytes("b") is None
    index.drop("a")
    assert not index_path(tmp_path, "a", "binary").exists()
