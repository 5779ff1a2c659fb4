"""HTML pages to text blocks: trafilatura finds the main content, the Markdown parser turns it into blocks.

trafilatura drops navigation, footers and other boilerplate, and renders what remains (headings, paragraphs,
lists, tables) as Markdown. On short pages it finds no main content, and returns nothing or its baseline (all
body text run together, menus included); those pages fall back to walking the page's block elements with
selectolax, minus the obvious chrome (scripts, navigation, footers, forms).

A page nested deeper than ``parsing.max_html_depth`` is refused before any parser sees it (``html_depth.py``):
lexbor takes time quadratic in the depth (43 s for 100,000 nested ``<div>``s), and lxml and trafilatura walk
the tree recursively.
"""

from __future__ import annotations

import re

import trafilatura
from selectolax.lexbor import LexborHTMLParser, LexborNode

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.errors import NestingLimitError
from ragserve.ingest.guards import check_text_bytes
from ragserve.ingest.html_depth import nesting_depth
from ragserve.ingest.markdown import parse_markdown
from ragserve.ingest.textblocks import HeadingStack, clean_inline, clean_preformatted, decode_text
from ragserve.settings import ParsingSettings

# Browsers look for the charset declaration in the first 1024 bytes; allow for a long <head> before it.
_CHARSET_SNIFF_BYTES = 4096
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_CHROME_SELECTOR = "script, style, noscript, template, svg, iframe, nav, footer, form, button"
# A shorter result is most likely trafilatura's baseline (body text run together), not main content.
MIN_MAIN_CONTENT_CHARS = 200
_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BODY_TAGS = ("p", "li", "pre", "tr", "dt", "dd", "blockquote", "figcaption", "caption")
_BLOCK_TAGS = frozenset(_HEADING_TAGS + _BODY_TAGS)
_BLOCK_SELECTOR = ", ".join(sorted(_BLOCK_TAGS))
_HEADING_LEVELS = {tag: level for level, tag in enumerate(_HEADING_TAGS, start=1)}


def parse_html(data: bytes, filename: str, limits: ParsingSettings) -> ParsedDocument:
    """Parse an HTML page into blocks of its main content; the title is the page's ``<title>``.

    Raises DocumentParseError when the bytes are binary (BinaryContentError) or in an encoding neither UTF-8
    nor declared, NestingLimitError when elements nest deeper than ``limits.max_html_depth``.
    May return no blocks (a page of only navigation).
    """
    check_text_bytes(data, filename, is_legacy_encoding_allowed=True)
    html = decode_text(data, filename, declared_encoding=_declared_charset(data))
    if nesting_depth(html, stop_after=limits.max_html_depth) > limits.max_html_depth:
        raise NestingLimitError(
            f"{filename}: elements nest deeper than the limit of {limits.max_html_depth} levels "
            "(parsing.max_html_depth)"
        )
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = clean_inline(title_node.text()) if title_node is not None else ""
    extracted = trafilatura.extract(
        html,
        output_format="markdown",
        include_tables=True,
        include_comments=False,
        favor_recall=True,
    )
    if extracted and len(extracted) >= MIN_MAIN_CONTENT_CHARS:
        parsed = parse_markdown(extracted)
        if parsed.blocks:
            return ParsedDocument(blocks=parsed.blocks, title=title or parsed.title)
    blocks, first_h1 = _walk_block_elements(tree)
    return ParsedDocument(blocks=tuple(blocks), title=title or first_h1)


def _declared_charset(data: bytes) -> str | None:
    match = _META_CHARSET_RE.search(data[:_CHARSET_SNIFF_BYTES])
    return match.group(1).decode("ascii") if match else None


def _walk_block_elements(tree: LexborHTMLParser) -> tuple[list[TextBlock], str | None]:
    """Blocks from every outermost block element of the body, in document order, with heading sections."""
    body = tree.body
    if body is None:
        return [], None
    for node in body.css(_CHROME_SELECTOR):
        node.decompose()
    h1_nodes = body.css("h1")
    first_h1 = clean_inline(h1_nodes[0].text()) if h1_nodes else ""
    headings = HeadingStack(is_h1_title=len(h1_nodes) == 1)
    blocks: list[TextBlock] = []
    for node in body.css(_BLOCK_SELECTOR):
        tag = node.tag or ""
        if _has_block_ancestor(node):
            continue
        if tag in _HEADING_LEVELS:
            headings.enter(_HEADING_LEVELS[tag], clean_inline(node.text()))
            continue
        text = _element_text(node, tag)
        if text:
            blocks.append(TextBlock(text=text, section_path=headings.path))
    if not blocks:
        # A page whose text sits directly in <div>s or <body>: keep it all as one block.
        text = clean_inline(body.text(separator=" "))
        if text:
            blocks.append(TextBlock(text=text))
    return blocks, first_h1 or None


def _has_block_ancestor(node: LexborNode) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in _BLOCK_TAGS:
            return True
        parent = parent.parent
    return False


def _element_text(node: LexborNode, tag: str) -> str:
    if tag == "pre":
        return clean_preformatted(node.text())
    if tag == "tr":
        return clean_inline(" | ".join(clean_inline(cell.text()) for cell in node.css("th, td")))
    # Nested blocks (a list inside a list item) need a space between them; inline elements must not get one,
    # or "see <a>the docs</a>." would read "see the docs .".
    has_nested_block = len(node.css(_BLOCK_SELECTOR)) > 1  # css() matches the node itself too
    return clean_inline(node.text(separator=" " if has_nested_block else ""))
