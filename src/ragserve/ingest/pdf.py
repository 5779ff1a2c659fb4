"""PDF files to text blocks, one or more per page, with pdfium's text layer.

pdfium gives each page's text as lines with no paragraph marks. Lines are joined back into paragraphs: a
paragraph ends at a blank line, after a line that ends a sentence short of the page's usual line length, or
after a clearly short line followed by one that starts like a new paragraph (a heading, a list item). A wrong
guess costs little: the chunker packs a section's paragraphs together anyway, so this only decides where a
chunk's text has line breaks.
"""

from __future__ import annotations

import re
import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import DocumentParseError, PageLimitError
from ragserve.ingest.guards import text_limit_error
from ragserve.ingest.textblocks import clean_inline
from ragserve.settings import ParsingSettings

# pdfium is not thread-safe, and parsing runs in a worker thread pool: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()
# Fractions of the page's long-line length: a sentence ending on a line shorter than the first ends its
# paragraph; any line shorter than the second does when the next line starts like a new paragraph.
_SENTENCE_LINE_RATIO = 0.9
_SHORT_LINE_RATIO = 0.7
# Which line length counts as "long": the 90th percentile, so one stray over-long line does not decide.
_LONG_LINE_QUANTILE = 0.9
_SENTENCE_END_RE = re.compile(r"[.!?:;)\"'\u201d\u2019]$")
_NEW_PARAGRAPH_START_RE = re.compile(r"^(?:[A-Z0-9\u2022\u25cf\u2013\u2014*(\[\"'\u201c-])")
# Readers accept a PDF header anywhere in the first 1024 bytes; without one the bytes never reach pdfium.
_HEADER_WINDOW_BYTES = 1024
# pdfium marks a hyphen it found at a line break as one of these; the word continues on the next line.
_LINE_BREAK_HYPHENS = ("\x02", "\ufffe", "\u00ad")


def parse_pdf(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    """Parse a PDF into blocks with 1-based ``page`` numbers; the title is the document's Title metadata.

    Raises DocumentParseError naming ``filename`` when the bytes are not a PDF, the PDF needs a password or a
    page cannot be read, or no page has a text layer (a scanned image); PageLimitError when it has more than
    ``limits.max_pages`` pages, TextLimitError as soon as its text passes ``limits.max_text_chars``.
    """
    if b"%PDF-" not in data[:_HEADER_WINDOW_BYTES]:
        raise DocumentParseError(f"{filename}: not a valid PDF (no %PDF header)")
    with _PDFIUM_LOCK:
        pages_text, title = _read_pages(data, filename, limits)
    blocks = [
        TextBlock(text=paragraph, page=page_number)
        for page_number, text in enumerate(pages_text, start=1)
        for paragraph in split_pdf_paragraphs(text)
    ]
    if not blocks:
        raise DocumentParseError(
            f"{filename}: no extractable text; the PDF looks like scanned images, which need OCR first"
        )
    return ParsedDocument(blocks=tuple(blocks), title=title)


def _read_pages(data: bytes, filename: str, limits: ParsingSettings) -> tuple[list[str], str | None]:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise DocumentParseError(f"{filename}: the PDF is password-protected") from exc
        if exc.err_code == pdfium_c.FPDF_ERR_SECURITY:
            raise DocumentParseError(f"{filename}: the PDF uses an unsupported encryption scheme") from exc
        raise DocumentParseError(f"{filename}: not a valid PDF") from exc
    try:
        if len(document) > limits.max_pages:
            raise PageLimitError(
                f"{filename}: the PDF has {len(document):,} pages; the limit is {limits.max_pages:,} "
                "(parsing.max_pages)"
            )
        pages_text: list[str] = []
        chars = 0
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            pages_text.append(textpage.get_text_range())
            textpage.close()
            page.close()
            chars += len(pages_text[-1])
            if chars > limits.max_text_chars:
                raise text_limit_error(filename, limits.max_text_chars)
        title = clean_inline(document.get_metadata_value("Title")) or None
    except pdfium.PdfiumError as exc:
        raise DocumentParseError(f"{filename}: a page of the PDF could not be read") from exc
    finally:
        document.close()
    return pages_text, title


def split_pdf_paragraphs(page_text: str) -> list[str]:
    """Join one page's text lines back into cleaned paragraphs (see the module docstring for the rule)."""
    lines = [line.strip() for line in page_text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    long_line = _long_line_length(lines)
    paragraphs: list[str] = []
    current = ""
    for index, line in enumerate(lines):
        if not line:
            paragraphs.append(current)
            current = ""
            continue
        current = _join_line(current, line)
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if following and _ends_paragraph(line, following, long_line):
            paragraphs.append(current)
            current = ""
    paragraphs.append(current)
    cleaned = (clean_inline(paragraph) for paragraph in paragraphs)
    return [paragraph for paragraph in cleaned if paragraph]


def _long_line_length(lines: list[str]) -> int:
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return 0
    return lengths[min(len(lengths) - 1, int(len(lengths) * _LONG_LINE_QUANTILE))]


def _join_line(current: str, line: str) -> str:
    if not current:
        return line
    if current.endswith(_LINE_BREAK_HYPHENS):
        return current[:-1] + line
    if current.endswith("-") and line[:1].islower():
        # Keep the hyphen: dropping it would break compounds ("warm-up"), keeping it only costs a split word.
        return current + line
    return f"{current} {line}"


def _ends_paragraph(line: str, following: str, long_line: int) -> bool:
    if len(line) < _SENTENCE_LINE_RATIO * long_line and _SENTENCE_END_RE.search(line):
        return True
    return len(line) < _SHORT_LINE_RATIO * long_line and _NEW_PARAGRAPH_START_RE.match(following) is not None
