"""The int8 encoder: built from the fp32 file, cached beside it, reproducible, named apart, and close to fp32."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ragserve.embedding import quantize
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.errors import EmbeddingError
from ragserve.evaluation import read_corpus, read_queries
from ragserve.settings import Settings
from tests.conftest import FIXTURES

REFERENCE_TEXTS = [item["text"] for item in json.loads((FIXTURES / "minilm_reference.json").read_text())["items"]]
SLICE = FIXTURES / "scifact_slice"
# bench/README.md, "Int8 embeddings": on 2,400 SciFact and NFCorpus texts the mean is 0.997 and the minimum 0.984.
# The lowest here is the degenerate " " (nothing but [CLS] [SEP]).
MIN_COSINE = 0.97
MIN_MEAN_COSINE = 0.99


def slice_texts() -> list[str]:
    passages = [f"{d.title} {d.text}" for d in read_corpus(SLICE)][:100]
    return passages + sorted(read_queries(SLICE, "test")[0].values())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_int8_has_its_own_model_id_and_file_beside_the_fp32_one(
    embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder
) -> None:
    assert int8_embedder.model_id == "all-MiniLM-L6-v2/onnx-int8/256"
    assert embedder.model_id == "all-MiniLM-L6-v2/onnx-fp32/256"
    assert int8_embedder.onnx_path.parent == embedder.onnx_path.parent
    assert int8_embedder.onnx_path.name.startswith(embedder.onnx_path.stem + "-int8")
    # Most encoder weights are int8 now (word embeddings and the FFN output projections stay fp32).
    assert int8_embedder.onnx_path.stat().st_size < 0.8 * embedder.onnx_path.stat().st_size
    assert int8_embedder.dimension == 384


def test_int8_vectors_stay_close_to_fp32(embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder) -> None:
    texts = REFERENCE_TEXTS + slice_texts()

    full, reduced = embedder.embed(texts), int8_embedder.embed(texts)

    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    cosines = (full.astype(np.float64) * reduced).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, texts[int(cosines.argmin())]
    assert cosines.mean() >= MIN_MEAN_COSINE
    assert cosines.mean() < 0.99999  # really the quantized model, not the fp32 file under another name


def test_int8_ranks_the_slice_like_fp32(embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder) -> None:
    passages = [f"{d.title} {d.text}" for d in read_corpus(SLICE)]
    queries = sorted(read_queries(SLICE, "test")[0].values())

    top = [(e.embed(queries) @ e.embed(passages).T).argmax(axis=1) for e in (embedder, int8_embedder)]

    assert (top[0] == top[1]).mean() >= 0.9


def test_the_quantized_file_is_cached(
    int8_embedder: OnnxEmbedder, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_ns = int8_embedder.onnx_path.stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("the cached int8 file should have been reused")

    monkeypatch.setattr(quantize, "quantize_int8", fail)
    again = OnnxEmbedder(model_cache, intra_op_threads=1, precision="int8")

    assert again.onnx_path == int8_embedder.onnx_path
    assert again.onnx_path.stat().st_mtime_ns == built_ns
    assert not [p.name for p in model_cache.iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_quantizing_is_deterministic(embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder, tmp_path: Path) -> None:
    # Every process that builds the file must get the same vectors, so the same bytes.
    quantize.quantize_int8(embedder.onnx_path, tmp_path / "again.onnx", quantize.DEFAULT_RECIPE)

    assert sha256(tmp_path / "again.onnx") == sha256(int8_embedder.onnx_path)


def test_another_recipe_gets_another_model_id_and_file(int8_embedder: OnnxEmbedder, model_cache: Path) -> None:
    every_matmul = quantize.Int8Recipe()

    other = OnnxEmbedder(model_cache, intra_op_threads=1, precision="int8", int8_recipe=every_matmul)

    assert other.model_id == f"all-MiniLM-L6-v2/onnx-int8-{quantize.recipe_hash(every_matmul)}/256"
    assert other.onnx_path != int8_embedder.onnx_path
    assert other.onnx_path.stat().st_size < int8_embedder.onnx_path.stat().st_size  # six more MatMuls in int8


def test_an_unreadable_fp32_file_raises_embedding_error(tmp_path: Path) -> None:
    broken = tmp_path / "sentence-encoder-broken.onnx"
    broken.write_bytes(b"not an onnx model")

    with pytest.raises(EmbeddingError, match="fp32 encoder"):
        quantize.ensure_quantized(broken)
    assert [p.name for p in tmp_path.iterdir()] == [broken.name]


def test_precision_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().embedding.precision == "fp32"
    monkeypatch.setenv("RAGSERVE_EMBEDDING__PRECISION", "int8")
    assert Settings().embedding.precision == "int8"
    monkeypatch.setenv("RAGSERVE_EMBEDDING__PRECISION", "int4")
    with pytest.raises(ValidationError, match="precision"):
        Settings()
