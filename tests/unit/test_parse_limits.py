"""Hostile files are refused by cheap checks, each with its own error code and a message naming the file and
the limit: binaries renamed as text, zip bombs (from the zip directory alone), deeply nested HTML, PDFs with
too many pages or no PDF header, and too much extracted text."""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ragserve.errors import (
    ArchiveLimitError,
    BinaryContentError,
    DocumentParseError,
    NestingLimitError,
    PageLimitError,
    TextLimitError,
)
from ragserve.ingest.html_depth import nesting_depth
from ragserve.ingest.loaders import load_file, parse_text
from ragserve.settings import ParsingSettings
from tests import hostile_files

FILES = Path(__file__).resolve().parent.parent / "fixtures" / "files"
LIMITS = ParsingSettings()


def fixture(name: str) -> bytes:
    return (FILES / name).read_bytes()


# --- binaries under a text name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("notes.txt", hostile_files.elf_binary, "the file is an ELF executable, not text"),
        ("diagram.md", hostile_files.png_image, "the file is a PNG image, not text"),
        ("records.json", lambda: fixture("report.pdf"), "the file is a PDF document, not text"),
        ("lines.jsonl", lambda: fixture("onboarding.docx"), r"the file is a zip archive \(or a Word"),
        ("photo.html", hostile_files.png_image, "the file is a PNG image, not text"),
        ("late.txt", lambda: b"plain words " * 5000 + b"\x00rest", "binary data, not text .a NUL byte at offset 60000"),
        (
            "noise.txt",
            lambda: hostile_files.random_bytes(200_000).replace(b"\x00", b"\x01"),
            r"binary data, not text \(\d+% of its first 64 KiB is not UTF-8",
        ),
    ],
)
def test_binary_content_under_a_text_name_is_refused_saying_what_it_is(
    name: str, make: Callable[[], bytes], message: str
) -> None:
    with pytest.raises(BinaryContentError, match=rf"^{re.escape(name)}: {message}") as caught:
        load_file(make(), name, LIMITS)
    assert caught.value.code == "binary_content"


def test_text_that_merely_is_not_utf8_is_not_called_binary() -> None:
    latin1 = "Le café crème coûte deux euros à la gare.\n".encode("latin-1") * 100
    with pytest.raises(DocumentParseError, match="not valid UTF-8") as caught:
        load_file(latin1, "menu.txt", LIMITS)
    assert not isinstance(caught.value, BinaryContentError)


def test_utf16_text_with_a_byte_order_mark_is_text_despite_its_nul_bytes() -> None:
    data = codecs.BOM_UTF16_LE + "Paid leave is 25 days.".encode("utf-16-le")
    assert load_file(data, "leave.txt", LIMITS).blocks[0].text == "Paid leave is 25 days."


# --- zip bombs in .docx --------------------------------------------------------------------------------------


def test_docx_zip_bomb_is_refused_from_its_directory_without_inflating() -> None:
    bomb = hostile_files.docx_zip_bomb(inflated_mib=1024)
    assert len(bomb) < 4 * hostile_files.MIB
    with pytest.raises(
        ArchiveLimitError, match=r"^bomb\.docx: the document would inflate to 1,073,7\d\d,\d{3} bytes"
    ) as caught:
        load_file(bomb, "bomb.docx", LIMITS)
    assert "the limit is 268,435,456 (parsing.max_archive_bytes)" in caught.value.message
    assert caught.value.code == "archive_too_large"


def test_docx_part_compressed_like_a_bomb_is_refused_under_the_size_limit() -> None:
    bomb = hostile_files.docx_zip_bomb(inflated_mib=50)
    with pytest.raises(ArchiveLimitError, match=r"part word/document\.xml is compressed [\d,]+ to 1, like a zip bomb"):
        load_file(bomb, "small-bomb.docx", LIMITS)
    # The same part is fine under a ratio limit it stays within (it then fails as the empty XML it is).
    with pytest.raises(DocumentParseError) as caught:
        load_file(bomb, "small-bomb.docx", ParsingSettings(max_archive_ratio=100_000))
    assert not isinstance(caught.value, ArchiveLimitError)


def test_docx_with_too_many_parts_is_refused() -> None:
    parts = len(zipfile.ZipFile(io.BytesIO(fixture("onboarding.docx"))).infolist())
    with pytest.raises(
        ArchiveLimitError, match=rf"holds {parts} files; the limit is 3 \(parsing.max_archive_entries\)"
    ):
        load_file(fixture("onboarding.docx"), "onboarding.docx", ParsingSettings(max_archive_entries=3))


def test_docx_within_the_limits_parses() -> None:
    assert load_file(fixture("onboarding.docx"), "onboarding.docx", LIMITS).blocks


# --- deeply nested HTML --------------------------------------------------------------------------------------


def test_html_nested_100k_deep_is_refused_before_any_parser_builds_it() -> None:
    with pytest.raises(NestingLimitError, match=r"^deep\.html: elements nest deeper than the limit of 512 levels"):
        load_file(hostile_files.deeply_nested_html(100_000), "deep.html", LIMITS)


def test_html_nested_within_the_limit_parses() -> None:
    parsed = load_file(hostile_files.deeply_nested_html(400), "deep.html", LIMITS)
    assert [block.text for block in parsed.blocks] == ["deep text"]


@pytest.mark.parametrize(
    ("html", "depth"),
    [
        ("<div>" * 700, 700),
        ("<div/>" * 700, 700),  # HTML ignores the slash: each opens a div
        ("<b>" * 700 + "bold", 700),  # unclosed formatting tags nest
        ("<div><span>text</div>" * 700, 2),  # </div> closes the unclosed span
        ("<ul>" + "<li>item" * 700 + "</ul>", 1),  # list items close each other
        ("<p>para" * 700, 0),
        ("<svg>" + "<path/>" * 700 + "</svg>", 1),  # foreign content does self-close
        ("<script>" + "<div>" * 700 + "</script>", 0),
        ("<!--" + "<div>" * 700 + "-->", 0),
        ("</div>" * 700 + "<div><div>", 2),
    ],
)
def test_nesting_depth_follows_how_html_closes_elements(html: str, depth: int) -> None:
    assert nesting_depth(html, stop_after=10_000) == depth


def test_real_article_is_shallow() -> None:
    assert nesting_depth(fixture("article.html").decode(), stop_after=512) < 20


# --- PDFs ----------------------------------------------------------------------------------------------------


def test_pdf_with_more_pages_than_the_limit_is_refused() -> None:
    with pytest.raises(
        PageLimitError, match=r"^pages\.pdf: the PDF has 30 pages; the limit is 20 \(parsing.max_pages\)$"
    ):
        load_file(hostile_files.pdf_with_pages(30), "pages.pdf", ParsingSettings(max_pages=20))
    parsed = load_file(hostile_files.pdf_with_pages(20), "pages.pdf", ParsingSettings(max_pages=20))
    assert [block.page for block in parsed.blocks] == list(range(1, 21))


def test_random_bytes_named_pdf_never_reach_pdfium() -> None:
    with pytest.raises(DocumentParseError, match=r"^random\.pdf: not a valid PDF \(no %PDF header\)$"):
        load_file(hostile_files.random_bytes(256 * 1024), "random.pdf", LIMITS)


# --- extracted text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["release-notes.txt", "report.pdf", "article.html", "onboarding.docx", "faq.json"])
def test_more_text_than_the_limit_is_refused_in_every_format(name: str) -> None:
    with pytest.raises(TextLimitError, match=rf"^{re.escape(name)}: the text extracted exceeds the limit of 50 "):
        load_file(fixture(name), name, ParsingSettings(max_text_chars=50))


def test_inline_text_has_the_same_text_limit() -> None:
    with pytest.raises(TextLimitError, match=r"^inline text: .*\(parsing\.max_text_chars\)"):
        parse_text("word " * 100, limits=ParsingSettings(max_text_chars=50))
