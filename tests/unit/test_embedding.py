"""OnnxEmbedder against sentence-transformers' own all-MiniLM-L6-v2 vectors (tests/fixtures/minilm_reference.json)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ragserve.embedding import onnx_export
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import Embedder
from ragserve.errors import EmbeddingError

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "minilm_reference.json").read_text("utf-8"))
ITEMS: list[dict[str, Any]] = REFERENCE["items"]
TEXTS = [item["text"] for item in ITEMS]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir, intra_op_threads=2)


def cosines_to_reference(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Cosine of each row with the reference vector of the text at the same position in ``TEXTS``."""
    reference = np.array([item["embedding"] for item in ITEMS[: len(vectors)]], dtype=np.float64)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosines: npt.NDArray[np.float64] = (vectors.astype(np.float64) * reference).sum(axis=1)
    return cosines


def test_reference_covers_truncation_and_the_baked_in_128_limit() -> None:
    # Guards the fixture itself: without these texts the tests below would not catch wrong truncation.
    lengths = [item["tokens_without_special"] for item in ITEMS]
    assert any(128 < n <= 254 for n in lengths)
    assert any(n > 256 for n in lengths)
    assert REFERENCE["max_seq_length"] == 256


def test_identity(onnx_embedder: OnnxEmbedder) -> None:
    assert isinstance(onnx_embedder, Embedder)
    assert onnx_embedder.model_id == "all-MiniLM-L6-v2/onnx-fp32/256"
    assert onnx_embedder.dimension == 384


def test_one_mixed_length_batch_matches_sentence_transformers(onnx_embedder: OnnxEmbedder) -> None:
    vectors = onnx_embedder.embed(TEXTS)

    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = cosines_to_reference(vectors)
    assert cosines.min() >= MIN_COSINE, dict(zip(TEXTS, cosines.round(6), strict=True))


def test_one_text_at_a_time_matches_sentence_transformers(onnx_embedder: OnnxEmbedder) -> None:
    vectors = np.concatenate([onnx_embedder.embed([text], kind="query") for text in TEXTS])

    cosines = cosines_to_reference(vectors)
    assert cosines.min() >= MIN_COSINE, dict(zip(TEXTS, cosines.round(6), strict=True))


def test_small_batches_return_vectors_in_input_order(cache_dir: Path) -> None:
    # Batches of 3 over length-sorted texts: every batch is re-ordered, so a mix-up shows as a wrong vector.
    small = OnnxEmbedder(cache_dir, batch_size=3, intra_op_threads=1)

    cosines = cosines_to_reference(small.embed(TEXTS))

    assert cosines.min() >= MIN_COSINE


def test_degenerate_texts_give_unit_vectors(onnx_embedder: OnnxEmbedder) -> None:
    norms = np.linalg.norm(onnx_embedder.embed(["", "a", "\u200b", "." * 1000]), axis=1)

    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_query_and_document_kinds_embed_alike(onnx_embedder: OnnxEmbedder) -> None:
    np.testing.assert_array_equal(
        onnx_embedder.embed(["what is rag?"], kind="query"), onnx_embedder.embed(["what is rag?"], kind="document")
    )


def test_empty_input_gives_an_empty_matrix(onnx_embedder: OnnxEmbedder) -> None:
    vectors = onnx_embedder.embed([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32
    assert onnx_embedder.count_tokens([]) == []


def test_count_tokens_excludes_special_tokens_and_does_not_truncate(onnx_embedder: OnnxEmbedder) -> None:
    # "hello world" is [CLS] hello world [SEP]; the reference counts come from the transformers tokenizer.
    assert onnx_embedder.count_tokens(["hello world", " "]) == [2, 0]
    assert onnx_embedder.count_tokens(TEXTS) == [item["tokens_without_special"] for item in ITEMS]


def test_concurrent_calls_give_the_same_vectors(onnx_embedder: OnnxEmbedder) -> None:
    short_texts = [item["text"] for item in ITEMS if item["tokens_without_special"] < 40]
    expected = onnx_embedder.embed(short_texts)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: onnx_embedder.embed(short_texts), range(8)))

    for vectors in results:
        np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_cached_model_is_reused(onnx_embedder: OnnxEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built_ns = onnx_embedder.onnx_path.stat().st_mtime_ns

    def fail_build(model_dir: Path) -> None:
        raise AssertionError("the cached ONNX file should have been reused")

    monkeypatch.setattr(onnx_export, "build_model", fail_build)
    second = OnnxEmbedder(cache_dir, intra_op_threads=1)

    assert second.onnx_path == onnx_embedder.onnx_path
    assert second.onnx_path.stat().st_mtime_ns == built_ns
    assert not [p.name for p in cache_dir.iterdir() if p.suffix != ".onnx"]  # no temp files left behind


def test_new_exporter_version_rebuilds(
    onnx_embedder: OnnxEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "EXPORTER_VERSION", onnx_export.EXPORTER_VERSION + "-next")
    rebuilt = OnnxEmbedder(cache_dir, intra_op_threads=1)

    assert rebuilt.onnx_path != onnx_embedder.onnx_path
    assert rebuilt.onnx_path.stat().st_mtime_ns >= onnx_embedder.onnx_path.stat().st_mtime_ns
    assert cosines_to_reference(rebuilt.embed(TEXTS[:3])).min() >= MIN_COSINE


def test_corrupt_cached_model_raises_embedding_error(onnx_embedder: OnnxEmbedder, tmp_path: Path) -> None:
    (tmp_path / onnx_embedder.onnx_path.name).write_bytes(b"not an onnx model")

    with pytest.raises(EmbeddingError):
        OnnxEmbedder(tmp_path, intra_op_threads=1)


def test_tokenizer_failure_raises_embedding_error(onnx_embedder: OnnxEmbedder) -> None:
    with pytest.raises(EmbeddingError):
        onnx_embedder.embed([None])  # type: ignore[list-item]
    with pytest.raises(EmbeddingError):
        onnx_embedder.count_tokens([b"bytes"])  # type: ignore[list-item]


def test_missing_checkpoint_raises_embedding_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError):
        OnnxEmbedder(tmp_path / "cache", model_dir=tmp_path / "no-model")


def test_out_of_range_settings_are_rejected(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_seq_length"):
        OnnxEmbedder(cache_dir, max_seq_length=1024)
    with pytest.raises(ValueError, match="batch_size"):
        OnnxEmbedder(cache_dir, batch_size=0)
