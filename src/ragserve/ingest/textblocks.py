"""What every loader builds its text blocks with: decoding, cleaning, paragraph splitting, section paths.

Every loader funnels its text through these functions so that blocks from any file type look the same to the
chunker: NFC-normalised, no control characters, single spaces inside a paragraph.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator

from ragserve.errors import DocumentParseError

# C0 and C1 control characters except tab and newline, plus characters that are invisible in text and only
# disturb tokenisation and matching: byte-order mark, soft hyphen, zero-width space, object replacement.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u00ad\u200b\ufffc\ufffe\uffff]")
_SPACE_RUN_RE = re.compile(r"\s+")
_BLANK_LINE_RE = re.compile(r"\n[ \t\f\v\u00a0]*\n")
_TRAILING_SPACE_RE = re.compile(r"[ \t]+\n")
# How many leading bytes to inspect when guessing whether a file is binary: enough for any file header.
_BINARY_SNIFF_BYTES = 8192
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def decode_text(data: bytes, filename: str, *, declared_encoding: str | None = None) -> str:
    """Decode a text file's bytes: UTF-8 (with or without BOM), or UTF-16 when it starts with a BOM.

    ``declared_encoding`` (an HTML page's meta charset) is tried when the bytes are not UTF-8, replacing bytes
    it cannot decode. Raises DocumentParseError naming ``filename`` when the bytes look binary (NUL bytes) or
    are not valid UTF-8 and declare no usable encoding. Line endings are normalised to ``\\n``.
    """
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentParseError(f"{filename}: not valid UTF-16 text") from exc
        return _normalise_newlines(text)
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise DocumentParseError(f"{filename}: looks like a binary file, not text")
    try:
        # utf-8-sig also decodes plain UTF-8; it only drops a leading byte-order mark when there is one.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fallback = _decode_declared(data, declared_encoding)
        if fallback is not None:
            return _normalise_newlines(fallback)
        raise DocumentParseError(
            f"{filename}: not valid UTF-8 text (byte {exc.start}); save the file as UTF-8 and upload it again"
        ) from exc
    return _normalise_newlines(text)


def _decode_declared(data: bytes, encoding: str | None) -> str | None:
    if encoding is None:
        return None
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:  # an unknown name, or a codec such as base64 that is not a text encoding
        return None


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_control(text: str) -> str:
    """Return ``text`` NFC-normalised, without control or invisible characters (tab and newline are kept)."""
    return _CONTROL_RE.sub("", unicodedata.normalize("NFC", text))


def clean_inline(text: str) -> str:
    """Return ``text`` as one stripped paragraph: no control characters, every whitespace run one space."""
    return _SPACE_RUN_RE.sub(" ", strip_control(text)).strip()


def clean_preformatted(text: str) -> str:
    """Return code or other preformatted text with its line structure kept; only trailing spaces and blank
    edges are dropped, so indentation still means what it meant."""
    text = strip_control(_normalise_newlines(text)).replace("\t", "    ")
    return _TRAILING_SPACE_RE.sub("\n", text).strip("\n").rstrip()


def split_paragraphs(text: str) -> Iterator[str]:
    """Yield the cleaned, non-empty paragraphs of plain text, where a blank line separates paragraphs."""
    for raw in _BLANK_LINE_RE.split(_normalise_newlines(text)):
        paragraph = clean_inline(raw)
        if paragraph:
            yield paragraph


class HeadingStack:
    """The headings open at the current point of a document, outermost first, as a section path.

    With ``is_h1_title`` the level-1 heading names the whole document: it closes every open section but is
    not itself part of any path.
    """

    def __init__(self, *, is_h1_title: bool = False) -> None:
        self._is_h1_title = is_h1_title
        self._open: list[tuple[int, str]] = []
        self.path: tuple[str, ...] = ()

    def enter(self, level: int, text: str) -> None:
        """Open a heading of ``level`` (1 is outermost), closing any open heading at that level or deeper."""
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        if text and not (level == 1 and self._is_h1_title):
            self._open.append((level, text))
        self.path = tuple(heading for _, heading in self._open)
