"""An int8 variant of the exported ONNX sentence encoder, built locally from the fp32 file (no download).

Dynamic quantization (onnxruntime ``quantize_dynamic``): weights are stored as int8 with a scale per output
channel, activations are quantized per call. Only ``MatMul``s with a constant weight are quantized, and not all
of them (``DEFAULT_RECIPE``); the word-embedding ``Gather`` and the two activation-by-activation ``MatMul``s of
attention (scores and context) stay fp32. bench/embed_quantization.py measures each choice: one scale per
weight tensor, as ``quantize_dynamic`` does by default, turns some vectors to cosine 0.89 with fp32.

``ensure_quantized`` keeps the result next to the fp32 file, named after it, a hash of the recipe and
``QUANTIZER_VERSION``: bump the version whenever the way a recipe is applied changes.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnxruntime.quantization import QuantType, quantize_dynamic

from ragserve.embedding.onnx_export import write_atomically
from ragserve.errors import EmbeddingError

QUANTIZER_VERSION = "1"


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantize: ``fp32_weights`` are regular expressions over weight initializer names (e.g.
    ``encoder\\.layer\\.\\d+\\.output\\.dense``) whose ``MatMul`` stays fp32."""

    per_channel: bool = True
    reduce_range: bool = False
    const_weights_only: bool = True
    quantize_gather: bool = False
    fp32_weights: tuple[str, ...] = field(default_factory=tuple)


# The output projection of each layer's feed-forward block (1536 → 384) stays fp32: its input, the GELU output, has
# the widest range. With it quantized as well, SciFact lost 0.0057 nDCG@10; without, nothing (bench/README.md).
# Changing this recipe changes the vectors behind the model id ``.../onnx-int8/...``, so data embedded under the
# old one would mix with the new: give a new recipe a new model id instead.
DEFAULT_RECIPE = Int8Recipe(fp32_weights=(r"encoder\.layer\.\d+\.output\.dense",))


def recipe_hash(recipe: Int8Recipe) -> str:
    """Eight hex digits that name ``recipe``."""
    return hashlib.sha256(repr(sorted(asdict(recipe).items())).encode()).hexdigest()[:8]


def variant_name(recipe: Int8Recipe) -> str:
    """``int8`` for the default recipe, ``int8-<recipe hash>`` for any other (the precision in model ids)."""
    return "int8" if recipe == DEFAULT_RECIPE else f"int8-{recipe_hash(recipe)}"


def ensure_quantized(fp32_path: Path, recipe: Int8Recipe = DEFAULT_RECIPE) -> Path:
    """Return the int8 encoder built from ``fp32_path``, building it beside that file if absent.

    Written to a temporary file and renamed, so concurrent processes see no file or a whole one. Raises
    ``EmbeddingError`` if the fp32 file cannot be read or quantized, or the directory cannot be written.
    """
    path = fp32_path.with_name(f"{fp32_path.stem}-int8-{recipe_hash(recipe)}-q{QUANTIZER_VERSION}.onnx")
    if path.is_file():
        return path
    try:
        with tempfile.TemporaryDirectory(dir=fp32_path.parent, prefix=".quantize-") as scratch:
            built = Path(scratch) / "model.onnx"
            quantize_int8(fp32_path, built, recipe)
            write_atomically(path, built.read_bytes())
    except OSError as exc:
        raise EmbeddingError(f"cannot write the int8 encoder beside {fp32_path}: {exc}") from exc
    return path


def quantize_int8(source: Path, target: Path, recipe: Int8Recipe) -> None:
    """Write the int8 form of the ONNX model at ``source`` to ``target``. Raises ``EmbeddingError``."""
    try:
        model = onnx.load(str(source))
    except (OSError, DecodeError) as exc:
        raise EmbeddingError(f"cannot read the fp32 encoder {source}: {exc}") from exc
    op_types = ["MatMul", "Gather"] if recipe.quantize_gather else ["MatMul"]
    try:
        quantize_dynamic(
            model,
            target,
            op_types_to_quantize=op_types,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_nodes_with_weights(model, recipe.fp32_weights),
            extra_options={"MatMulConstBOnly": recipe.const_weights_only},
        )
    except OSError:
        raise
    except Exception as exc:
        # onnxruntime.quantization raises plain Exception/ValueError/RuntimeError for graphs it cannot handle.
        raise EmbeddingError(f"cannot quantize {source}: {exc}") from exc


def _nodes_with_weights(model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """Names of the nodes that read an initializer whose name matches one of ``patterns``."""
    if not patterns:
        return []
    matcher = re.compile("|".join(f"(?:{p})" for p in patterns))
    initializers = {init.name for init in model.graph.initializer if matcher.search(init.name)}
    return [node.name for node in model.graph.node if initializers.intersection(node.input)]
