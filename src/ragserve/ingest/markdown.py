"""Markdown to text blocks, from markdown-it-py's token stream.

Headings are not blocks of their own: they build the ``section_path`` of the blocks under them. The first H1
is the document's title; when it is the only H1 it names the whole document and so stays out of every section
path, but when there are several (one per chapter) each is a section. Paragraphs, list items, table rows and
code blocks each become one block; raw HTML blocks are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ragserve.domain import ParsedDocument, TextBlock
from ragserve.ingest.textblocks import HeadingStack, clean_inline, clean_preformatted

# YAML front matter ("---" fenced block at the very top) is metadata, not prose; markdown-it would otherwise
# render it as a rule followed by a setext heading.
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_INLINE_TEXT_TYPES = frozenset({"text", "code_inline", "image"})
_LINE_BREAK_TYPES = frozenset({"softbreak", "hardbreak"})


def _make_parser() -> MarkdownIt:
    # CommonMark plus GFM tables: what README-style files and trafilatura's output both use.
    return MarkdownIt("commonmark").enable("table")


@dataclass
class _Walk:
    """State while walking the token stream: open headings and the row of table cells being collected."""

    headings: HeadingStack
    title: str | None = None
    pending_heading_level: int | None = None
    row_cells: list[str] | None = None
    blocks: list[TextBlock] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text:
            self.blocks.append(TextBlock(text=text, section_path=self.headings.path))

    def open_heading(self, level: int, text: str) -> None:
        if level == 1 and self.title is None:
            self.title = text or None
        self.headings.enter(level, text)


def inline_text(token: Token) -> str:
    """Return the plain text of an ``inline`` token: markup dropped, code spans and image alt text kept."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in _INLINE_TEXT_TYPES:
            parts.append(child.content)
        elif child.type in _LINE_BREAK_TYPES:
            parts.append(" ")
    return clean_inline("".join(parts))


def _visit(token: Token, walk: _Walk) -> None:
    kind = token.type
    if kind == "heading_open":
        walk.pending_heading_level = int(token.tag[1:])
    elif kind == "inline":
        text = inline_text(token)
        if walk.pending_heading_level is not None:
            walk.open_heading(walk.pending_heading_level, text)
            walk.pending_heading_level = None
        elif walk.row_cells is not None:
            walk.row_cells.append(text)
        else:
            walk.add(text)
    elif kind == "tr_open":
        walk.row_cells = []
    elif kind == "tr_close" and walk.row_cells is not None:
        if any(walk.row_cells):
            walk.add(clean_inline(" | ".join(walk.row_cells)))
        walk.row_cells = None
    elif kind in ("fence", "code_block"):
        walk.add(clean_preformatted(token.content))


def parse_markdown(text: str) -> ParsedDocument:
    """Parse Markdown source into blocks; the title is the first H1, if there is one.

    Never raises on malformed Markdown (every string is valid Markdown); may return no blocks.
    """
    tokens = _make_parser().parse(_FRONT_MATTER_RE.sub("", text, count=1))
    h1_count = sum(1 for token in tokens if token.type == "heading_open" and token.tag == "h1")
    walk = _Walk(headings=HeadingStack(is_h1_title=h1_count == 1))
    for token in tokens:
        _visit(token, walk)
    return ParsedDocument(blocks=tuple(walk.blocks), title=walk.title)
