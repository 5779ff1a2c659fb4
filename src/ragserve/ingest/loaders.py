"""Turn an uploaded file, or inline text, into a ``ParsedDocument`` of clean text blocks.

The parser is chosen by file extension. Each format's parser lives in its own module (``markdown``, ``html``,
``pdf``, ``word``); plain text and JSON are small enough to live here. Whatever the format, a file that
cannot be read raises ``DocumentParseError`` with a message that names the file and says what is wrong, and
a file that reads but holds no text raises it too, so that no document is stored empty.

Every parser works under ``ParsingSettings``' limits: a text file that is really binary is refused before
decoding (``guards.py``), each format bounds what it can be made to inflate (zip directory, HTML depth, PDF
pages), and the text extracted is bounded for all. The time and memory a parser takes are bounded by running it
in a child process (``isolation.py``).

Parsing is CPU-bound and synchronous: callers run it in a worker thread, not on the event loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import DocumentParseError, UnsupportedMediaTypeError
from ragserve.ingest.guards import check_text_bytes, check_text_size
from ragserve.ingest.html import parse_html
from ragserve.ingest.markdown import parse_markdown
from ragserve.ingest.pdf import parse_pdf
from ragserve.ingest.textblocks import clean_inline, decode_text, split_paragraphs
from ragserve.ingest.word import parse_docx
from ragserve.settings import ParsingSettings

# Field names a JSON record's text may be under, in order of preference.
JSON_TEXT_FIELDS = ("text", "content", "body")
_PATH_SEPARATOR_RE = re.compile(r"[\\/]")

_FileParser = Callable[[bytes, str, ParsingSettings], ParsedDocument]
_DEFAULT_LIMITS = ParsingSettings()


def _text(data: bytes, filename: str) -> str:
    check_text_bytes(data, filename)
    return decode_text(data, filename)


def _load_plain(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    return _plain_document(_text(data, filename))


def _load_markdown(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    return parse_markdown(_text(data, filename))


def _load_json(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    value = _decode_json(_text(data, filename), filename)
    if isinstance(value, dict):
        return ParsedDocument(blocks=tuple(_record_blocks(value)), title=_record_title(value))
    if not isinstance(value, list):
        raise DocumentParseError(f"{filename}: expected a JSON object or a list of objects")
    blocks: list[TextBlock] = []
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise DocumentParseError(f"{filename}: item {index} of the list is not a JSON object")
        blocks.extend(_record_blocks(record))
    return ParsedDocument(blocks=tuple(blocks))


def _load_jsonl(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    blocks: list[TextBlock] = []
    for number, line in enumerate(_text(data, filename).split("\n"), start=1):
        if not line.strip():
            continue
        record = _decode_json(line, filename, line_number=number)
        if not isinstance(record, dict):
            raise DocumentParseError(f"{filename}: line {number} is not a JSON object")
        blocks.extend(_record_blocks(record))
    return ParsedDocument(blocks=tuple(blocks))


_PARSERS: dict[str, _FileParser] = {
    ".txt": _load_plain,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".json": _load_json,
    ".jsonl": _load_jsonl,
}

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_PARSERS)
"""Lower-case file extensions, with their dot, that ``load_file`` can parse."""


def file_extension(filename: str) -> str:
    """Return the lower-case extension of ``filename`` with its dot (``".pdf"``), or ``""`` if it has none.

    Directory parts are ignored, whether they use ``/`` or ``\\``.
    """
    name = _PATH_SEPARATOR_RE.split(filename)[-1]
    stem, dot, extension = name.rpartition(".")
    return f".{extension.lower()}" if dot and stem else ""


def is_supported(filename: str) -> bool:
    """Whether ``load_file`` has a parser for this file name's extension (case-insensitive)."""
    return file_extension(filename) in SUPPORTED_EXTENSIONS


def load_file(data: bytes, filename: str, limits: ParsingSettings = _DEFAULT_LIMITS) -> ParsedDocument:
    """Parse an uploaded file's bytes into text blocks, choosing the parser by ``filename``'s extension.

    Raises UnsupportedMediaTypeError for an extension no parser handles, and DocumentParseError (its message
    starts with ``filename``) for a damaged, encrypted or mislabelled file, or one with no text at all; its
    subclasses BinaryContentError for a text file that is binary, and ParseLimitError's for a file over one
    of ``limits``.
    """
    parser = _PARSERS.get(file_extension(filename))
    if parser is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedMediaTypeError(f"{filename}: unsupported file type; supported types are {supported}")
    parsed = parser(data, filename, limits)
    if not parsed.blocks:
        raise DocumentParseError(f"{filename}: no text found")
    check_text_size(parsed, filename, limits.max_text_chars)
    return parsed


def parse_text(text: str, *, markdown: bool = False, limits: ParsingSettings = _DEFAULT_LIMITS) -> ParsedDocument:
    """Parse text sent inline: plain text (a blank line separates paragraphs) or, with ``markdown``, Markdown.

    Raises DocumentParseError when the text is blank, TextLimitError when it is over ``limits.max_text_chars``.
    """
    parsed = parse_markdown(text) if markdown else _plain_document(text)
    if not parsed.blocks:
        raise DocumentParseError("inline text: no text found")
    check_text_size(parsed, "inline text", limits.max_text_chars)
    return parsed


def _plain_document(text: str) -> ParsedDocument:
    return ParsedDocument(blocks=tuple(TextBlock(text=paragraph) for paragraph in split_paragraphs(text)))


def _decode_json(text: str, filename: str, *, line_number: int | None = None) -> Any:
    """``json.loads``, raising DocumentParseError that says where the JSON (or JSON Lines line) breaks."""
    where = "" if line_number is None else f"line {line_number} is "
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        position = f"column {exc.colno}" if line_number else f"line {exc.lineno}, column {exc.colno}"
        raise DocumentParseError(f"{filename}: {where}not valid JSON ({exc.msg} at {position})") from exc
    except RecursionError as exc:
        raise DocumentParseError(f"{filename}: {where}JSON nested too deeply") from exc


def _record_title(record: dict[str, Any]) -> str | None:
    title = record.get("title")
    return (clean_inline(title) or None) if isinstance(title, str) else None


def _record_text(record: dict[str, Any]) -> str:
    for field in JSON_TEXT_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _record_blocks(record: dict[str, Any]) -> Iterator[TextBlock]:
    """A JSON record's text as blocks, one per paragraph, in the section named by its ``title``."""
    title = _record_title(record)
    section_path = (title,) if title else ()
    for paragraph in split_paragraphs(_record_text(record)):
        yield TextBlock(text=paragraph, section_path=section_path)
