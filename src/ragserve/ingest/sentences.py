"""A fast rule-based sentence splitter for chunking.

It runs on every ingested document, so it is one regular-expression scan plus a few string checks per
candidate boundary. A boundary is sentence-final punctuation followed by whitespace, unless the next word
starts with a lower-case ASCII letter ("e.g. the"), or the word before the full stop is a known
abbreviation ("Dr.", "Fig."), an initial ("J. Smith"), a dotted abbreviation ("U.S.") or the number of a
numbered list item ("1. Install").
Decimals ("3.14") never match, having no space after the point. Ideographic full stops end a sentence with
no space after them, and so does a line break (only preformatted blocks such as code keep theirs).

Pieces keep their trailing whitespace, so joining a text's sentences gives back the text exactly.
"""

from __future__ import annotations

import re

# Abbreviations that end in a full stop but rarely end a sentence; compared lower-case, without the stop.
# Sentence-final words such as "etc." are left out on purpose: a capitalised next word means a new sentence.
ABBREVIATIONS = frozenset(
    {
        # titles and names
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "col", "lt", "capt", "sgt",
        "hon", "messrs",
        # references in papers and documentation
        "fig", "figs", "eq", "eqs", "ref", "refs", "no", "nos", "vol", "vols", "pp", "p", "ch", "chap", "sec",
        "sect", "tab", "art", "ed", "eds", "al", "cf", "viz", "vs", "approx", "ca", "resp", "ver", "op", "ibid",
        # organisations and places
        "inc", "ltd", "co", "corp", "dept", "univ", "assn", "bros", "ave", "rd", "blvd",
        # months
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip

# Group 1: sentence-final punctuation with any closing quotes or brackets, then the whitespace after it.
# Group 2: a full stop that needs no space after it (CJK). Group 3: a line break in preformatted text.
_CANDIDATE_RE = re.compile(r"""([.!?\u2026]+["')\]\u201d\u2019]*)\s+|([\u3002\uff01\uff1f]+)\s*|(\n)\s*""")
_OPENING_PUNCTUATION = "\"'([\u201c\u2018"
_DOTTED_ABBREVIATION_RE = re.compile(r"^(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}$")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, each keeping the whitespace that follows it.

    ``"".join(split_sentences(text)) == text.strip()``; a blank text gives ``[]``. Pure and deterministic.
    """
    text = text.strip()
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE_RE.finditer(text):
        following = match.end()
        if following >= len(text):
            break
        if match.group(1) is not None and not _is_boundary(text, start, match.start(1), following):
            continue
        sentences.append(text[start:following])
        start = following
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _is_boundary(text: str, sentence_start: int, punctuation_start: int, following: int) -> bool:
    """Whether the punctuation at ``punctuation_start`` ends the sentence that began at ``sentence_start``."""
    # Only ASCII lower case: sentences in scientific text often start with a Greek letter ("β-amyloid ...").
    if "a" <= text[following] <= "z":
        return False
    if text[punctuation_start] != "." or text.startswith("..", punctuation_start):
        return True
    word_start = max(text.rfind(" ", sentence_start, punctuation_start) + 1, sentence_start)
    word = text[word_start:punctuation_start].lstrip(_OPENING_PUNCTUATION)
    if word.lower() in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial
    if _DOTTED_ABBREVIATION_RE.match(word):
        return False
    # "1. Install": the number of a numbered item, when it is all the sentence holds so far.
    return not (word.isdigit() and word_start == sentence_start)
