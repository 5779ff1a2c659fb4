"""Loaders turn each supported file type into the right blocks, titles, sections and pages, and reject
broken files with an error that names them."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import DocumentParseError, UnsupportedMediaTypeError
from ragserve.ingest.loaders import SUPPORTED_EXTENSIONS, is_supported, load_file, parse_text
from ragserve.ingest.pdf import split_pdf_paragraphs

FILES = Path(__file__).resolve().parent.parent / "fixtures" / "files"


def load(name: str) -> ParsedDocument:
    return load_file((FILES / name).read_bytes(), name)


def texts(parsed: ParsedDocument) -> list[str]:
    return [block.text for block in parsed.blocks]


def block_starting(parsed: ParsedDocument, prefix: str) -> TextBlock:
    matches = [block for block in parsed.blocks if block.text.startswith(prefix)]
    assert len(matches) == 1, f"{prefix!r} starts {len(matches)} blocks: {texts(parsed)}"
    return matches[0]


# --- choosing a parser -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", True),
        ("REPORT.PDF", True),
        ("notes.Markdown", True),
        ("C:\\Users\\ana\\page.htm", True),
        ("uploads/2024/data.jsonl", True),
        ("slides.pptx", False),
        ("archive.tar.gz", False),
        ("README", False),
        (".pdf", False),
        ("pdf", False),
    ],
)
def test_is_supported_goes_by_extension(filename: str, expected: bool) -> None:
    assert is_supported(filename) is expected


def test_supported_extensions_cover_the_documented_types() -> None:
    assert {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".json", ".jsonl"} == SUPPORTED_EXTENSIONS


def test_unknown_extension_is_unsupported_media_type_naming_the_file() -> None:
    with pytest.raises(UnsupportedMediaTypeError, match=r"^slides\.pptx: unsupported file type"):
        load_file(b"PK\x03\x04", "slides.pptx")


# --- each format -----------------------------------------------------------------------------------------


def test_markdown_headings_build_section_paths_under_the_h1_title() -> None:
    parsed = load("guide.md")
    assert parsed.title == "Ragserve Operator Guide"
    assert block_starting(parsed, "Ragserve answers questions").section_path == ()
    assert block_starting(parsed, "Ragserve needs Python").section_path == ("Install",)
    assert block_starting(parsed, "Install the package").section_path == ("Install", "Linux")
    assert block_starting(parsed, "The same steps work").section_path == ("Install", "macOS")
    assert block_starting(parsed, "Settings are read").section_path == ("Configuration",)


def test_markdown_keeps_code_lines_list_items_table_rows_and_drops_markup() -> None:
    parsed = load("guide.md")
    assert "python -m venv .venv\n.venv/bin/pip install ragserve" in texts(parsed)
    assert "Then start the server with ragserve serve --port 8080." in texts(parsed)
    assert "RAGSERVE_DATA_DIR | ./data | Where documents and indexes live" in texts(parsed)
    assert "Back it up nightly." in texts(parsed)
    assert "Snapshots are enough for most teams." in texts(parsed)
    assert block_starting(parsed, "Changing the embedding model").section_path == ("Configuration",)
    assert not any("owner: platform-team" in text or "**" in text or "`" in text for text in texts(parsed))


def test_markdown_with_several_h1s_treats_each_as_a_section() -> None:
    parsed = parse_text("# Part one\n\nAlpha.\n\n# Part two\n\n## Detail\n\nBeta.", markdown=True)
    assert parsed.title == "Part one"
    assert [(block.text, block.section_path) for block in parsed.blocks] == [
        ("Alpha.", ("Part one",)),
        ("Beta.", ("Part two", "Detail")),
    ]


def test_html_article_keeps_content_and_sections_and_drops_boilerplate() -> None:
    parsed = load("article.html")
    assert parsed.title == "Tuning HNSW indexes | Acme Engineering Blog"
    assert block_starting(parsed, "Approximate nearest-neighbour search").section_path == ()
    assert block_starting(parsed, "The M parameter").section_path == ("Building the graph",)
    assert block_starting(parsed, "The ef_construction parameter").section_path == ("Building the graph",)
    assert block_starting(parsed, "64 | 0.962 | 2.1").section_path == ("Searching the graph",)
    assert block_starting(parsed, "Filtered search").section_path == ("Searching the graph", "Filtering")
    joined = " ".join(texts(parsed))
    for boilerplate in ("About us", "Careers", "Related posts", "All rights reserved", "Privacy policy"):
        assert boilerplate not in joined


def test_short_html_page_falls_back_to_block_elements_without_navigation() -> None:
    page = (
        b"<html><head><title>Status</title></head><body><nav><a href='/'>Home</a></nav>"
        b"<h1>Service status</h1><p>All systems operational, see <a href='/h'>history</a>.</p>"
        b"<h2>Incidents</h2><ul><li>Search was slow<ul><li>fixed on 3 March</li></ul></li></ul>"
        b"<footer>(c) Acme</footer></body></html>"
    )
    parsed = load_file(page, "status.html")
    assert parsed.title == "Status"
    assert [(block.text, block.section_path) for block in parsed.blocks] == [
        ("All systems operational, see history.", ()),
        ("Search was slow fixed on 3 March", ("Incidents",)),
    ]


def test_html_in_a_declared_legacy_charset_is_decoded() -> None:
    dish = "Cr\u00e8me br\u00fbl\u00e9e \u2013 5 \u20ac"  # accents, an en dash and the euro sign
    page = f"<html><head><meta charset='windows-1252'></head><body><p>{dish}</p></body></html>"
    parsed = load_file(page.encode("cp1252"), "menu.html")
    assert texts(parsed) == [dish]


def test_pdf_blocks_carry_one_based_page_numbers_and_metadata_title() -> None:
    parsed = load("report.pdf")
    assert parsed.title == "Quarterly Reliability Report, Q1"
    assert block_starting(parsed, "Quarterly Reliability Report").page == 1
    assert block_starting(parsed, "This report covers").page == 1
    assert block_starting(parsed, "Two incidents caused").page == 1
    assert block_starting(parsed, "Remediation").page == 2
    assert block_starting(parsed, "We expect the next quarter").page == 2


def test_pdf_lines_are_joined_into_paragraphs() -> None:
    paragraph = block_starting(load("report.pdf"), "This report covers").text
    assert "The service answered 99.95% of requests" in paragraph
    assert paragraph.endswith("at the 95th percentile.")


def test_docx_title_heading_sections_and_table_rows_in_document_order() -> None:
    parsed = load("onboarding.docx")
    assert parsed.title == "Onboarding Guide"
    assert [(block.text, block.section_path) for block in parsed.blocks] == [
        ("Welcome to the platform team. This guide lists what to set up in week one.", ()),
        ("Ask your manager for access to the code host and the on-call rota.", ("Accounts",)),
        (
            "Install the VPN client before your first day. Use the company profile, not a personal one.",
            ("Accounts", "Laptop"),
        ),
        ("Team | Channel", ("Contacts",)),
        ("Platform | #platform", ("Contacts",)),
        ("Security | #sec", ("Contacts",)),
        ("Questions not covered here go to the #platform channel.", ("Contacts",)),
    ]


def test_text_file_paragraphs_split_on_blank_lines_with_lines_joined() -> None:
    parsed = load("release-notes.txt")
    assert parsed.title is None
    assert len(parsed.blocks) == 4
    assert parsed.blocks[0].text == "Release notes for version 2.4"
    assert "Parsing now runs in a separate worker pool" in parsed.blocks[1].text
    assert parsed.blocks[3].text == "Thanks to Dr. Lee and the support team for the detailed bug reports."


def test_json_list_records_become_blocks_in_their_title_sections() -> None:
    parsed = load("faq.json")
    assert parsed.title is None
    assert [(block.text, block.section_path) for block in parsed.blocks] == [
        (
            "Open Settings, choose Security and click Reset password. "
            "A link valid for 30 minutes is sent to your e-mail address.",
            ("How do I reset my password?",),
        ),
        (
            "Yes. Administrators can export every collection as JSON Lines from the Admin page.",
            ("Can I export my data?",),
        ),
        ("Exports larger than 2 GB are split into several files.", ("Can I export my data?",)),
        ("Contact support@example.com for anything not covered here.", ()),
    ]


def test_json_single_object_gives_the_document_title() -> None:
    parsed = load_file(json.dumps({"title": "Changelog", "body": "Added SSO."}).encode(), "one.json")
    assert parsed.title == "Changelog"
    assert parsed.blocks == (TextBlock(text="Added SSO.", section_path=("Changelog",)),)


def test_jsonl_one_record_per_line_skipping_blank_lines() -> None:
    parsed = load("tickets.jsonl")
    assert [(block.text, block.section_path) for block in parsed.blocks] == [
        (
            "After re-uploading a document, search kept returning the old version for about a minute.",
            ("Search returns stale results",),
        ),
        ("Uploading a 40-page PDF took 12 seconds on the staging cluster.", ("Slow PDF upload",)),
        ("A ticket without a title still counts.", ()),
    ]


# --- text clean-up ---------------------------------------------------------------------------------------


def test_control_characters_are_stripped_and_whitespace_collapsed() -> None:
    data = "First\tline  with\u00a0spaces\x07 and a\u200b bell.\r\n\r\n\x1bSecond\u00ad paragraph.\r\n".encode()
    assert texts(load_file(data, "notes.txt")) == ["First line with spaces and a bell.", "Second paragraph."]


@pytest.mark.parametrize(
    "data",
    [
        "\ufeffCafé menu.".encode(),
        "Café menu.".encode("utf-16"),
        "Café menu.".encode("utf-16-be").join([b"\xfe\xff", b""]),
    ],
    ids=["utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_text_with_a_byte_order_mark_is_decoded(data: bytes) -> None:
    assert texts(load_file(data, "menu.txt")) == ["Café menu."]


def test_parse_text_plain_and_markdown() -> None:
    assert texts(parse_text("One.\n\n\nTwo\nlines.")) == ["One.", "Two lines."]
    parsed = parse_text("# Notes\n\n## Setup\n\n* install", markdown=True)
    assert parsed.title == "Notes"
    assert parsed.blocks == (TextBlock(text="install", section_path=("Setup",)),)


def test_parse_text_rejects_blank_text() -> None:
    with pytest.raises(DocumentParseError, match="no text found"):
        parse_text(" \n\t\n ")


# --- broken files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage.pdf", "not a valid PDF"),
        ("encrypted.pdf", "password-protected"),
        ("scanned.pdf", "no extractable text"),
        ("notadocx.docx", r"not a valid Word \(\.docx\) document"),
        ("binary.txt", "an ELF executable, not text"),
        ("invalid-utf8.txt", "not valid UTF-8"),
        ("bad.json", r"not valid JSON \(.* at line 2, column 1\)"),
    ],
)
def test_broken_file_raises_parse_error_naming_it(name: str, message: str) -> None:
    with pytest.raises(DocumentParseError, match=rf"^{re.escape(name)}: .*{message}"):
        load(name)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.txt", b""),
        ("blank.md", b"\n\n   \n"),
        ("headings-only.md", b"# Title\n\n## Section\n"),
        ("nav-only.html", b"<html><body><nav><a href='/'>Home</a></nav></body></html>"),
        ("fields.json", b'[{"id": 1}, {"text": "  "}]'),
        ("empty.jsonl", b"\n\n"),
    ],
)
def test_file_without_text_is_rejected(name: str, data: bytes) -> None:
    with pytest.raises(DocumentParseError, match=rf"^{re.escape(name)}: no text found$"):
        load_file(data, name)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("scalar.json", b'"just a string"', "expected a JSON object or a list of objects"),
        ("mixed.json", b'[{"text": "ok"}, 42]', "item 1 of the list is not a JSON object"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        ("lines.jsonl", b'{"text": "ok"}\n\n{"text": oops}\n', r"line 3 is not valid JSON \(.*column 10\)"),
        ("list.jsonl", b'{"text": "ok"}\n[1, 2]\n', "line 2 is not a JSON object"),
    ],
)
def test_malformed_json_says_where(name: str, data: bytes, message: str) -> None:
    with pytest.raises(DocumentParseError, match=rf"^{re.escape(name)}: {message}"):
        load_file(data, name)


def _zip(parts: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    return buffer.getvalue()


_SPREADSHEET_TYPES = (
    '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>'
)
_OFFICE_RELS = (
    '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>'
)


@pytest.mark.parametrize(
    "parts",
    [
        {"[Content_Types].xml": _SPREADSHEET_TYPES},
        {"[Content_Types].xml": _SPREADSHEET_TYPES, "_rels/.rels": _OFFICE_RELS, "xl/workbook.xml": "<w/>"},
        {"[Content_Types].xml": "<Types unclosed"},
    ],
    ids=["no-main-part", "spreadsheet", "broken-xml"],
)
def test_office_zip_that_is_not_a_word_document_is_rejected(parts: dict[str, str]) -> None:
    with pytest.raises(DocumentParseError, match=r"^book\.docx: not a valid Word \(\.docx\) document"):
        load_file(_zip(parts), "book.docx")


def test_every_fixture_is_small() -> None:
    sizes = {path.name: path.stat().st_size for path in FILES.iterdir()}
    assert len(sizes) >= 14
    assert max(sizes.values()) < 50_000


@pytest.mark.parametrize(
    ("page_text", "expected"),
    [
        # A line that ends a sentence short of the margin ends its paragraph; a full line does not.
        (
            "The first paragraph runs across a whole line of the page and\r\nends here.\r\n"
            "The second one also fills a whole line before it wraps around\r\nonto this one.",
            [
                "The first paragraph runs across a whole line of the page and ends here.",
                "The second one also fills a whole line before it wraps around onto this one.",
            ],
        ),
        # pdfium's mark for a hyphen at a line break joins the word; a real hyphen is kept.
        ("An extra\x02\r\nordinary warm-\r\nup run.", ["An extraordinary warm-up run."]),
        ("Heading\r\n\r\nBody text.", ["Heading", "Body text."]),
        ("", []),
    ],
    ids=["short-last-line", "hyphens", "blank-line", "empty"],
)
def test_pdf_page_lines_are_rejoined_into_paragraphs(page_text: str, expected: list[str]) -> None:
    assert split_pdf_paragraphs(page_text) == expected
