"""How deep an HTML page's elements nest, estimated in one pass over its tags, before any parser builds a tree.

A browser's tree builder closes some elements by itself, and this scan mimics the parts that matter for depth:
void elements (``<br>``) and elements whose end tag is optional (``<p>``, ``<li>``, ``<td>``...) are not
counted, since they cannot nest in one another; an end tag closes every element opened after its match, as
when ``</div>`` ends an unclosed ``<span>``, and one without a match is ignored; ``<div/>`` opens a ``<div>``
(HTML ignores the slash) except inside ``<svg>`` or ``<math>``; the text of ``<script>``, ``<style>`` and the
like, and comments, hold no tags. What remains are elements that nest for real, such as ``<div>``, ``<span>``,
``<ul>``, ``<table>`` and unclosed ``<b>`` or ``<font>`` tags.
"""

from __future__ import annotations

import re
from collections import Counter

_TAG_RE = re.compile(r"<!--|<(/?)([A-Za-z][^\s/>]*)([^>]*)>")
_COMMENT_END = "-->"
# fmt: off
_VOID = frozenset({
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img", "input", "keygen",
    "link", "meta", "param", "source", "track", "wbr",
})
# Elements a start tag of their own kind (or of a sibling kind) closes, and the document's fixed frame.
_NOT_NESTING = frozenset({
    "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "tbody", "thead", "tfoot", "colgroup", "caption",
    "rb", "rt", "rp", "rtc", "html", "head", "body",
})
_RAW_TEXT = frozenset({
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext",
})
# fmt: on
_FOREIGN = ("svg", "math")
_RAW_TEXT_END = {name: re.compile(rf"</{name}[\s/>]", re.IGNORECASE) for name in _RAW_TEXT}


def nesting_depth(html: str, stop_after: int) -> int:
    """The deepest element nesting the scan finds (see the module docstring); it stops once past ``stop_after``."""
    stack: list[str] = []
    open_count: Counter[str] = Counter()
    deepest = 0
    position = 0
    while deepest <= stop_after and (match := _TAG_RE.search(html, position)) is not None:
        position = match.end()
        closing, name, rest = match.group(1), match.group(2), match.group(3)
        if name is None:  # a comment
            end = html.find(_COMMENT_END, position)
            position = len(html) if end < 0 else end + len(_COMMENT_END)
            continue
        name = name.lower()
        if closing:
            if open_count[name]:
                while (popped := stack.pop()) != name:
                    open_count[popped] -= 1
                open_count[name] -= 1
        elif name in _RAW_TEXT:
            end_tag = _RAW_TEXT_END[name].search(html, position)
            position = len(html) if end_tag is None else end_tag.start()
        elif name in _VOID or name in _NOT_NESTING:
            continue
        elif not (rest.endswith("/") and any(open_count[foreign] for foreign in _FOREIGN)):
            stack.append(name)
            open_count[name] += 1
            deepest = max(deepest, len(stack))
    return deepest
