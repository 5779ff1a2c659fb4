"""Build an ONNX sentence encoder straight from a sentence-transformers BERT checkpoint, without torch.

The graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq]``) and returns
``sentence_embedding`` (float32, ``[batch, hidden]``): BERT encoder → attention-masked mean pooling →
L2 normalisation, the Transformer → Pooling → Normalize pipeline of all-MiniLM-L6-v2. Weights are read
with ``safetensors.numpy`` and the graph is written node by node with ``onnx.helper``; token type ids are
always zero, so that embedding row is folded into the position table.

``ensure_exported`` keeps the built file in a cache directory, named by a hash of the checkpoint and
``EXPORTER_VERSION``: bump the version whenever the graph this module writes changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ragserve.errors import EmbeddingError

EXPORTER_VERSION = "1"
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"

_WEIGHTS_FILE = "model.safetensors"
_CONFIG_FILES = ("config.json", "modules.json", "1_Pooling/config.json")
_EXPECTED_MODULES = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]
_HASH_CHUNK_BYTES = 1 << 20

Weights = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder, from the checkpoint's ``config.json``."""

    hidden_size: int
    num_layers: int
    num_heads: int
    layer_norm_eps: float
    max_positions: int

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> BertConfig:
        """Read and check the checkpoint's configuration.

        Raises ``EmbeddingError`` if a file is missing or unreadable, or if the checkpoint is not a
        BERT encoder with erf GELU, absolute positions, mean pooling and normalisation (the only graph
        this module can write).
        """
        config = _read_json(model_dir / "config.json")
        pooling = _read_json(model_dir / "1_Pooling" / "config.json")
        modules = [module.get("type") for module in _read_json(model_dir / "modules.json")]
        if (
            config.get("model_type") != "bert"
            or config.get("hidden_act") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
            or not pooling.get("pooling_mode_mean_tokens")
            or modules != _EXPECTED_MODULES
        ):
            raise EmbeddingError(f"{model_dir} is not a mean-pooled, normalised BERT sentence encoder")
        try:
            bert = cls(
                hidden_size=int(config["hidden_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=int(config["num_attention_heads"]),
                layer_norm_eps=float(config["layer_norm_eps"]),
                max_positions=int(config["max_position_embeddings"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"{model_dir / 'config.json'} lacks a BERT setting: {exc!r}") from exc
        if bert.hidden_size % bert.num_heads:
            raise EmbeddingError(f"hidden size {bert.hidden_size} is not a multiple of {bert.num_heads} heads")
        return bert


def ensure_exported(model_dir: Path, cache_dir: Path) -> Path:
    """Return the path of the ONNX encoder for ``model_dir``, building it into ``cache_dir`` if absent.

    The file name carries a hash of the weights, the configuration and ``EXPORTER_VERSION``, so a new
    checkpoint or exporter gets a new file. It is written to a temporary file and renamed, so concurrent
    processes see either no file or a whole one. Raises ``EmbeddingError`` if the checkpoint cannot be
    read or the cache directory cannot be written.
    """
    path = cache_dir / f"sentence-encoder-{_cache_key(model_dir)}.onnx"
    if path.is_file():
        return path
    model = build_model(model_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, model.SerializeToString())
    except OSError as exc:
        raise EmbeddingError(f"cannot write the ONNX encoder to {cache_dir}: {exc}") from exc
    return path


def build_model(model_dir: Path) -> onnx.ModelProto:
    """Build the ONNX sentence encoder of the checkpoint in ``model_dir``. Raises ``EmbeddingError``."""
    config = BertConfig.from_model_dir(model_dir)
    try:
        weights: Weights = load_file(model_dir / _WEIGHTS_FILE)
    except (OSError, SafetensorError) as exc:
        raise EmbeddingError(f"cannot read {model_dir / _WEIGHTS_FILE}: {exc}") from exc
    try:
        graph = _encoder_graph(weights, config)
    except (KeyError, ValueError) as exc:
        raise EmbeddingError(f"{model_dir / _WEIGHTS_FILE} does not match its config: {exc!r}") from exc
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ragserve.embedding.onnx_export",
        producer_version=EXPORTER_VERSION,
    )
    # onnx stamps its newest IR version; opset 17 needs only IR 8, which every supported onnxruntime loads.
    model.ir_version = 8
    return model


class _GraphWriter:
    """Collects nodes and initializers, naming every intermediate value uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._scalars: dict[float, str] = {}

    def const(self, name: str, value: npt.ArrayLike, dtype: type[np.generic] = np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant, shared by every node that uses the same value."""
        if value not in self._scalars:
            self._scalars[value] = self.const(f"scalar_{len(self._scalars)}", value)
        return self._scalars[value]

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        return self.op_multi(op_type, inputs, 1, [output] if output else None, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: list[str], n_outputs: int, outputs: list[str] | None = None, **attrs: Any
    ) -> list[str]:
        self._count += 1
        name = f"{op_type}_{self._count}"
        outputs = outputs or [f"{name}_out{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs

    def linear(self, x: str, weights: Weights, prefix: str) -> str:
        """``x @ W.T + b`` for a torch ``Linear`` stored under ``prefix``."""
        w = self.const(f"{prefix}.weight_t", weights[f"{prefix}.weight"].T)
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, weights: Weights, prefix: str, eps: float) -> str:
        gamma = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        beta = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)


def _encoder_graph(weights: Weights, config: BertConfig) -> onnx.GraphProto:
    g = _GraphWriter()
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    x = _embeddings(g, weights, config)
    # Additive mask over keys, [batch, 1, 1, seq]: 0 where attended, float32 min where padded (as HF does).
    blocked = g.op("Sub", [g.scalar(1.0), mask])
    bias = g.op("Mul", [blocked, g.scalar(float(np.finfo(np.float32).min))])
    bias = g.op("Unsqueeze", [bias, g.const("axes_1_2", [1, 2], np.int64)])
    for layer in range(config.num_layers):
        x = _encoder_layer(g, weights, config, x, bias, f"encoder.layer.{layer}")
    _mean_pool_and_normalise(g, x, mask)

    batch_seq = ["batch", "sequence"]
    return helper.make_graph(
        g.nodes,
        "sentence_encoder",
        inputs=[helper.make_tensor_value_info(name, TensorProto.INT64, batch_seq) for name in INPUT_NAMES],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", config.hidden_size])],
        initializer=g.initializers,
    )


def _embeddings(g: _GraphWriter, weights: Weights, config: BertConfig) -> str:
    words = g.const("word_embeddings", weights["embeddings.word_embeddings.weight"])
    # Token type ids are always 0: add that row to every position once, here, instead of per token.
    positions_and_type = (
        weights["embeddings.position_embeddings.weight"] + weights["embeddings.token_type_embeddings.weight"][0]
    )
    positions = g.const("position_embeddings", positions_and_type)
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    zero = g.const("zero_1d", [0], np.int64)
    summed = g.op(
        "Add",
        [g.op("Gather", [words, "input_ids"]), g.op("Slice", [positions, zero, seq_len, zero])],
    )
    return g.layer_norm(summed, weights, "embeddings.LayerNorm", config.layer_norm_eps)


def _encoder_layer(g: _GraphWriter, weights: Weights, config: BertConfig, x: str, mask_bias: str, prefix: str) -> str:
    hidden, heads = config.hidden_size, config.num_heads
    head_dim = hidden // heads
    attn = f"{prefix}.attention.self"
    # One [hidden, 3*hidden] projection for Q, K and V; the 1/sqrt(head_dim) score scale is folded into Q.
    scale = 1.0 / math.sqrt(head_dim)
    qkv_w = np.concatenate(
        [weights[f"{attn}.query.weight"].T * scale, weights[f"{attn}.key.weight"].T, weights[f"{attn}.value.weight"].T],
        axis=1,
    )
    qkv_b = np.concatenate(
        [weights[f"{attn}.query.bias"] * scale, weights[f"{attn}.key.bias"], weights[f"{attn}.value.bias"]]
    )
    qkv = g.op("Add", [g.op("MatMul", [x, g.const(f"{attn}.qkv.weight_t", qkv_w)]), g.const(f"{attn}.qkv.bias", qkv_b)])
    split = g.const(f"{attn}.split", [hidden] * 3, np.int64)
    q, k, v = g.op_multi("Split", [qkv, split], 3, axis=2)
    heads_shape = g.const(f"{attn}.heads_shape", [0, 0, heads, head_dim], np.int64)
    q = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
    k = g.op("Transpose", [g.op("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [g.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
    probs = g.op("Softmax", [g.op("Add", [g.op("MatMul", [q, k]), mask_bias])], axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, g.const(f"{attn}.merge_shape", [0, 0, hidden], np.int64)])

    attended = g.linear(context, weights, f"{prefix}.attention.output.dense")
    x = g.layer_norm(g.op("Add", [attended, x]), weights, f"{prefix}.attention.output.LayerNorm", config.layer_norm_eps)

    inner = g.linear(x, weights, f"{prefix}.intermediate.dense")
    # Exact (erf) GELU, written in the pattern onnxruntime fuses into a single Gelu kernel.
    erf = g.op("Erf", [g.op("Div", [inner, g.scalar(math.sqrt(2.0))])])
    gelu = g.op("Mul", [g.op("Mul", [inner, g.op("Add", [erf, g.scalar(1.0)])]), g.scalar(0.5)])
    out = g.linear(gelu, weights, f"{prefix}.output.dense")
    return g.layer_norm(g.op("Add", [out, x]), weights, f"{prefix}.output.LayerNorm", config.layer_norm_eps)


def _mean_pool_and_normalise(g: _GraphWriter, x: str, mask: str) -> None:
    mask_3d = g.op("Unsqueeze", [mask, g.const("axes_2", [2], np.int64)])
    seq_axis = g.const("axes_seq", [1], np.int64)
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask_3d]), seq_axis], keepdims=0)
    # Same floors as sentence-transformers: token count >= 1e-9, norm >= 1e-12.
    count = g.op("Max", [g.op("ReduceSum", [mask_3d, seq_axis], keepdims=0), g.scalar(1e-9)])
    mean = g.op("Div", [summed, count])
    norm = g.op("Max", [g.op("ReduceL2", [mean], axes=[1], keepdims=1), g.scalar(1e-12)])
    g.op("Div", [mean, norm], output=OUTPUT_NAME)


def _cache_key(model_dir: Path) -> str:
    digest = hashlib.sha256(f"exporter={EXPORTER_VERSION};opset={OPSET}".encode())
    try:
        for name in (_WEIGHTS_FILE, *_CONFIG_FILES):
            digest.update(name.encode())
            with (model_dir / name).open("rb") as f:
                while chunk := f.read(_HASH_CHUNK_BYTES):
                    digest.update(chunk)
    except OSError as exc:
        raise EmbeddingError(f"cannot read the model checkpoint in {model_dir}: {exc}") from exc
    return digest.hexdigest()[:16]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsynced and renamed."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # Without fsync a crash after the rename can leave an empty file under the final name.
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"cannot read {path}: {exc}") from exc
