"""Cheap checks on an uploaded file's bytes and parsed text, run before and after the format's parser.

A text file (.txt, .md, .json, .jsonl) must be text: a known binary signature (a PDF, zip, executable or image
renamed), a NUL byte, or a sample that is mostly not UTF-8 rejects it with ``BinaryContentError`` before any
decoding. Whatever the format, the text extracted is bounded by ``ParsingSettings.max_text_chars``. The
format-specific limits (zip directory, HTML depth, PDF pages) live with their parsers.
"""

from __future__ import annotations

import codecs

from ragserve.domain import ParsedDocument
from ragserve.errors import BinaryContentError, TextLimitError

# Leading bytes of common binary formats, and what to call them in an error message.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (or a Word or other Office file)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ\x90\x00", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old binary Office file (.doc, .xls)"),
)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# The share of invalid UTF-8 is judged on a sample: enough bytes to be representative, cheap on any size.
_SAMPLE_BYTES = 64 * 1024
# Text in a legacy 8-bit encoding has a few percent of invalid UTF-8 (accented letters); binary data has far
# more. Either way decoding would refuse the file; above this share the error says it is binary.
MAX_INVALID_UTF8_SHARE = 0.25
_REPLACEMENT = "\ufffd"
_ENCODED_REPLACEMENT = _REPLACEMENT.encode()


def binary_signature(data: bytes) -> str | None:
    """What binary format ``data`` starts like (``"a PNG image"``), or None."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def check_text_bytes(data: bytes, filename: str, *, is_legacy_encoding_allowed: bool = False) -> None:
    """Raise ``BinaryContentError`` naming ``filename`` when bytes sent as a text file are binary.

    Binary means a known binary signature, a NUL byte (unless the text is UTF-16 with a byte-order mark), or,
    unless ``is_legacy_encoding_allowed`` (HTML may declare another charset), more than
    ``MAX_INVALID_UTF8_SHARE`` of the first 64 KiB not decoding as UTF-8.
    """
    kind = binary_signature(data)
    if kind is not None:
        raise BinaryContentError(f"{filename}: the file is {kind}, not text; upload it under its own file type")
    if data.startswith(_UTF16_BOMS):
        return
    nul = data.find(b"\x00")
    if nul >= 0:
        raise BinaryContentError(f"{filename}: binary data, not text (a NUL byte at offset {nul})")
    if is_legacy_encoding_allowed:
        return
    share = invalid_utf8_share(data[:_SAMPLE_BYTES])
    if share > MAX_INVALID_UTF8_SHARE:
        raise BinaryContentError(
            f"{filename}: binary data, not text ({share:.0%} of its first {_SAMPLE_BYTES // 1024} KiB is not "
            "UTF-8; text files must be UTF-8, or UTF-16 with a byte-order mark)"
        )


def invalid_utf8_share(sample: bytes) -> float:
    """The share of ``sample`` that does not decode as UTF-8, counting each invalid sequence once."""
    if not sample:
        return 0.0
    # A character cut at the end of the sample is not an error of the file.
    decoded = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=False)
    invalid = decoded.count(_REPLACEMENT) - sample.count(_ENCODED_REPLACEMENT)
    return max(invalid, 0) / len(sample)


def check_text_size(parsed: ParsedDocument, filename: str, max_chars: int) -> None:
    """Raise ``TextLimitError`` when the parsed document holds more than ``max_chars`` characters of text."""
    if sum(len(block.text) for block in parsed.blocks) > max_chars:
        raise text_limit_error(filename, max_chars)


def text_limit_error(filename: str, max_chars: int) -> TextLimitError:
    return TextLimitError(
        f"{filename}: the text extracted exceeds the limit of {max_chars:,} characters (parsing.max_text_chars)"
    )
