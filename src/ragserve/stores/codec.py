"""How domain objects are kept in a store's columns: index configurations as JSON, parsed documents as
compressed JSON (kept so a new index version can chunk a document again without its original file)."""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict
from typing import Any

from ragserve.domain import IndexConfig, ParsedDocument, TextBlock
from ragserve.errors import StoreError


def config_to_json(config: IndexConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def config_from_json(text: str) -> IndexConfig:
    data: dict[str, Any] = json.loads(text)
    return IndexConfig(
        max_tokens=int(data["max_tokens"]),
        overlap_tokens=int(data["overlap_tokens"]),
        model=str(data["model"]),
        precision=data.get("precision", "f32"),
    )


def encode_parsed(parsed: ParsedDocument) -> bytes:
    blocks = [[b.text, list(b.section_path), b.page] for b in parsed.blocks]
    return zlib.compress(json.dumps({"title": parsed.title, "blocks": blocks}).encode(), 6)


def decode_parsed(blob: bytes) -> ParsedDocument:
    try:
        data: dict[str, Any] = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise StoreError(f"a stored parsed document is corrupt: {exc}") from exc
    blocks = tuple(TextBlock(str(text), tuple(path), page) for text, path, page in data["blocks"])
    return ParsedDocument(blocks=blocks, title=data.get("title"))
