"""Word (.docx) files to text blocks with python-docx.

Body paragraphs and tables are read in document order. A paragraph in the Title style is the document's title;
"Heading 1".."Heading 9" (or a custom style based on one) build the section path; every other non-empty
paragraph is a block, and so is every table row. Headers, footers, comments and text boxes are not read.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import ArchiveLimitError, DocumentParseError
from ragserve.ingest.textblocks import HeadingStack, clean_inline
from ragserve.settings import ParsingSettings

# Small parts compress well past any sane ratio (a few repeated tags); the ratio is judged on bigger ones.
_RATIO_MIN_BYTES = 1024 * 1024
_HEADING_STYLE_RE = re.compile(r"^heading ?([1-9])$", re.IGNORECASE)
# Style inheritance is short in real files; the bound only guards against a cycle in a hand-made one.
_MAX_STYLE_DEPTH = 10


def parse_docx(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    """Parse a .docx file into blocks with heading sections; the title is the first Title-style paragraph.

    Raises DocumentParseError naming ``filename`` when the bytes are not a Word document (another zip, an old
    binary .doc, a damaged file), ArchiveLimitError when its zip directory says it would inflate past
    ``limits`` (a zip bomb), before anything is decompressed.
    """
    _check_archive(data, filename, limits)
    try:
        document = docx.Document(io.BytesIO(data))
    # A missing part is a KeyError, a non-Word package a ValueError, damaged XML lxml's XMLSyntaxError,
    # which subclasses SyntaxError (caught by that base so the untyped lxml stays out of this module).
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError, SyntaxError) as exc:
        raise DocumentParseError(f"{filename}: not a valid Word (.docx) document") from exc
    title: str | None = None
    headings = HeadingStack()
    blocks: list[TextBlock] = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.extend(TextBlock(text=row, section_path=headings.path) for row in _table_rows(item))
            continue
        text = clean_inline(item.text)
        if not text:
            continue
        style_name = _style_name(item.style)
        level = _heading_level(item.style)
        if style_name == "Title" and title is None:
            title = text
        elif level is not None:
            headings.enter(level, text)
        else:
            blocks.append(TextBlock(text=text, section_path=headings.path))
    if title is None:
        title = clean_inline(document.core_properties.title or "") or None
    return ParsedDocument(blocks=tuple(blocks), title=title)


def _check_archive(data: bytes, filename: str, limits: ParsingSettings) -> None:
    """Judge the archive by its directory alone. zipfile stops inflating an entry at its declared size, so a
    directory that understates the sizes cannot inflate more than it says either."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise DocumentParseError(
            f"{filename}: not a valid Word (.docx) document; old binary .doc files must be saved as .docx"
        ) from exc
    if len(members) > limits.max_archive_entries:
        raise ArchiveLimitError(
            f"{filename}: the archive holds {len(members):,} files; the limit is "
            f"{limits.max_archive_entries:,} (parsing.max_archive_entries)"
        )
    total = sum(member.file_size for member in members)
    if total > limits.max_archive_bytes:
        raise ArchiveLimitError(
            f"{filename}: the document would inflate to {total:,} bytes once uncompressed; the limit is "
            f"{limits.max_archive_bytes:,} (parsing.max_archive_bytes)"
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size >= _RATIO_MIN_BYTES and ratio > limits.max_archive_ratio:
            raise ArchiveLimitError(
                f"{filename}: the part {member.filename} is compressed {ratio:,.0f} to 1, like a zip bomb; the "
                f"limit is {limits.max_archive_ratio:g} (parsing.max_archive_ratio)"
            )
    if not any(member.filename == "[Content_Types].xml" for member in members):
        raise DocumentParseError(f"{filename}: not a valid Word (.docx) document, just a zip archive")


def _style_name(style: Any) -> str:
    return str(style.name) if style is not None and style.name else ""


def _heading_level(style: Any) -> int | None:
    """The heading level of a paragraph style, following ``based_on`` so custom heading styles count too."""
    for _ in range(_MAX_STYLE_DEPTH):
        if style is None:
            return None
        match = _HEADING_STYLE_RE.match(_style_name(style))
        if match:
            return int(match.group(1))
        style = style.base_style
    return None


def _table_rows(table: Any) -> list[str]:
    """One cleaned line per row, cells joined by " | "; a merged cell spans columns but is written once."""
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous: object = None
        for cell in row.cells:
            # python-docx repeats a horizontally merged cell once per grid column it covers.
            if cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(clean_inline(cell.text))
        if any(cells):
            rows.append(clean_inline(" | ".join(cells)))
    return rows
