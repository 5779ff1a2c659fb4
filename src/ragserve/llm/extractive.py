"""The extractive answer generator: ragserve's offline default, which quotes the retrieved sentences that best
answer the question instead of writing new text.

Every sentence of the contexts is scored by a blend of its embedding similarity to the question, the share of
the question's content words it contains, and the rank of its context. The best few, minus near-duplicates,
become a short paragraph with a "[n]" marker after each sentence; weak evidence yields an abstention.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from ragserve.domain import Answer, AnswerDelta, Citation, SearchHit
from ragserve.embedding.protocol import Embedder
from ragserve.llm.abstention import DEFAULT_ABSTENTION, AbstentionModel, Evidence, answer_type, has_answer_type
from ragserve.llm.sentences import ContentWords, split_sentences, strip_references

ABSTENTION_TEXT = "I could not find an answer to this question in the documents."

# Headings, figure captions and list stubs are not answers, and they embed deceptively close to questions.
_MIN_SENTENCE_WORDS = 3
# Bounds the one embedding batch, and so the latency, when a caller passes many or very long contexts;
# candidates are taken in context order, so the lowest-ranked contexts are the ones left out.
_MAX_CANDIDATES = 256
# Sentences sharing this much of their content words are the same statement, whatever their vectors say.
_DUPLICATE_WORD_SHARE = 0.8
_TERMINAL = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A sentence of a context: ``context`` is the 0-based rank, ``position`` its order within the context."""

    context: int
    position: int
    text: str
    words: int
    terms: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Scored:
    """The candidates of a request with their vectors and blended scores, and the question's content words."""

    candidates: list[_Candidate]
    vectors: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float64]
    question_terms: list[str]
    idf: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Pick:
    """A sentence chosen for the answer, possibly cut to fit ``max_words``."""

    context: int
    position: int
    text: str


class ExtractiveGenerator:
    """Answers with up to ``max_sentences`` sentences (``max_words`` words in all) quoted from the contexts.

    A sentence's score is ``dense_weight * cosine + lexical_weight * overlap + rank_weight / (1 + rank)``, the
    weights normalised to sum to 1: ``cosine`` between the question and the sentence (prefixed with its
    document's title), ``overlap`` the IDF-weighted share of the question's stemmed content words found in the
    sentence, ``rank`` the 0-based rank of its context. Abstains when the best score is below ``min_score``;
    later sentences must score at least ``relative_score`` times the best, and sentences whose cosine with a
    chosen one reaches ``duplicate_similarity`` are skipped. Raises ``ValueError`` on bad settings and lets
    the embedder's ``EmbeddingError`` through.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_sentences: int = 3,
        max_words: int = 60,
        min_score: float = 0.45,
        dense_weight: float = 0.7,
        lexical_weight: float = 0.2,
        rank_weight: float = 0.1,
        relative_score: float = 0.9,
        duplicate_similarity: float = 0.95,
        abstention: AbstentionModel = DEFAULT_ABSTENTION,
        name: str = "extractive",
    ) -> None:
        if max_sentences < 1 or max_words < 1:
            raise ValueError("max_sentences and max_words must be at least 1")
        weights = (dense_weight, lexical_weight, rank_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("the score weights must be non-negative and not all zero")
        total = sum(weights)
        self._embedder = embedder
        self._max_sentences = max_sentences
        self._max_words = max_words
        self._min_score = min_score
        self._dense_weight = dense_weight / total
        self._lexical_weight = lexical_weight / total
        self._rank_weight = rank_weight / total
        self._relative_score = relative_score
        self._duplicate_similarity = duplicate_similarity
        self._abstention_model = abstention
        self._name = name
        self._content_words = ContentWords()

    @property
    def name(self) -> str:
        """The name reported in an answer's ``generator`` field."""
        return self._name

    async def generate(self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous") -> Answer:
        """The whole answer. Splitting, embedding and scoring run in a worker thread."""
        if not contexts or not question.strip():
            return self._abstention()
        return await anyio.to_thread.run_sync(self._answer, question, tuple(contexts))

    async def stream(
        self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous"
    ) -> AsyncIterator[AnswerDelta | Answer]:
        """The answer word by word (each with its trailing space, "[n]" markers as their own pieces), then
        the complete ``Answer``, whose text is the concatenation of the pieces."""
        answer = await self.generate(question, contexts)
        for piece in _pieces(answer.text):
            yield AnswerDelta(piece)
        yield answer

    def evidence(self, question: str, contexts: Sequence[SearchHit]) -> Evidence | None:
        """What the best sentence offers as an answer (None: the contexts have no sentence). Blocking: it
        embeds every sentence; ``generate`` runs the same in a worker thread."""
        scored = self._score(question, tuple(contexts))
        return None if scored is None else self._evidence(question, tuple(contexts), scored)

    def _answer(self, question: str, contexts: tuple[SearchHit, ...]) -> Answer:
        scored = self._score(question, contexts)
        if scored is None:
            return self._abstention()
        picks = self._select(scored.candidates, scored.vectors, scored.scores)
        if not picks or not self._abstention_model.is_answered(self._evidence(question, contexts, scored)):
            return self._abstention()
        return self._compose(picks, contexts)

    def _score(self, question: str, contexts: tuple[SearchHit, ...]) -> _Scored | None:
        candidates = self._candidates(contexts)
        if not candidates:
            return None
        query = self._embedder.embed([question], kind="query")[0]
        vectors = self._embedder.embed(
            [_embedding_text(contexts[c.context], c.text) for c in candidates], kind="document"
        )
        terms = sorted(self._content_words.of(question))
        idf = _idf(terms, candidates)
        return _Scored(candidates, vectors, self._scores(terms, idf, candidates, vectors @ query), terms, idf)

    def _evidence(self, question: str, contexts: tuple[SearchHit, ...], scored: _Scored) -> Evidence:
        """The best sentence's score, how much of the question its passage covers, and whether it holds a
        phrase of the type asked for."""
        best = int(np.argmax(scored.scores))  # the first of equals, as in _select
        candidate = scored.candidates[best]
        hit = contexts[candidate.context]
        passage = self._content_words.of(f"{hit.title or ''} {hit.text}")
        covered = np.array([term in passage for term in scored.question_terms], dtype=np.float64)
        coverage = float(covered @ scored.idf / scored.idf.sum()) if scored.question_terms else 0.0
        typed = has_answer_type(
            answer_type(question), candidate.text, frozenset(scored.question_terms), self._content_words
        )
        return Evidence(float(scored.scores[best]), coverage, typed)

    def _candidates(self, contexts: tuple[SearchHit, ...]) -> list[_Candidate]:
        candidates: list[_Candidate] = []
        for rank, hit in enumerate(contexts):
            for position, raw in enumerate(split_sentences(hit.text)):
                text = strip_references(raw)
                words = len(text.split())
                if words >= _MIN_SENTENCE_WORDS:
                    terms = self._content_words.of(text)
                    candidates.append(_Candidate(rank, position, text, words, terms))
                if len(candidates) == _MAX_CANDIDATES:
                    return candidates
        return candidates

    def _scores(
        self,
        question_terms: list[str],
        idf: npt.NDArray[np.float64],
        candidates: list[_Candidate],
        similarity: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float64]:
        """Blend cosine similarity, content-word overlap and the context-rank prior, per candidate."""
        overlap = _weighted_overlap(question_terms, idf, candidates)
        prior = np.array([1.0 / (1 + c.context) for c in candidates])
        blended: npt.NDArray[np.float64] = (
            self._dense_weight * similarity.astype(np.float64)
            + self._lexical_weight * overlap
            + self._rank_weight * prior
        )
        return blended

    def _select(
        self,
        candidates: list[_Candidate],
        vectors: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float64],
    ) -> list[_Pick]:
        """Greedy by score: skip near-duplicates of earlier picks and sentences that would overrun
        ``max_words``; the best sentence alone is cut to ``max_words`` rather than dropped."""
        order = np.argsort(-scores, kind="stable")  # ties go to the better-ranked context: deterministic
        best = float(scores[order[0]])
        if best < self._min_score:
            return []
        floor = max(self._min_score, best * self._relative_score)
        picks: list[_Pick] = []
        chosen: list[int] = []
        words = 0
        for i in order.tolist():
            candidate = candidates[i]
            if float(scores[i]) < floor or len(picks) == self._max_sentences:
                break
            if any(self._is_duplicate(candidates, vectors, i, j) for j in chosen):
                continue
            if words + candidate.words > self._max_words:
                if picks:
                    continue
                text = " ".join(candidate.text.split()[: self._max_words]).rstrip(",;:") + "…"
                return [_Pick(candidate.context, candidate.position, text)]
            picks.append(_Pick(candidate.context, candidate.position, candidate.text))
            chosen.append(i)
            words += candidate.words
        return picks

    def _is_duplicate(self, candidates: list[_Candidate], vectors: npt.NDArray[np.float32], i: int, j: int) -> bool:
        """Near-duplicates come from overlapping chunks and from the same fact stated in two documents.
        Distinct statements on one topic reach a cosine of about 0.89 with all-MiniLM-L6-v2."""
        a, b = candidates[i].terms, candidates[j].terms
        if a and b and len(a & b) / len(a | b) >= _DUPLICATE_WORD_SHARE:
            return True
        return float(vectors[i] @ vectors[j]) >= self._duplicate_similarity

    def _compose(self, picks: list[_Pick], contexts: tuple[SearchHit, ...]) -> Answer:
        picks = sorted(picks, key=lambda p: (p.context, p.position))
        parts = [f"{_with_terminal(p.text)} [{p.context + 1}]" for p in picks]
        citations: list[Citation] = []
        for rank in sorted({p.context for p in picks}):
            hit = contexts[rank]
            quote = " ".join(p.text for p in picks if p.context == rank)
            citations.append(Citation.of(hit, rank + 1, quote))
        return Answer(text=" ".join(parts), abstained=False, citations=tuple(citations), generator=self._name)

    def _abstention(self) -> Answer:
        return Answer(text=ABSTENTION_TEXT, abstained=True, citations=(), generator=self._name)


def _idf(question_terms: list[str], candidates: list[_Candidate]) -> npt.NDArray[np.float64]:
    """Each question word's inverse frequency among the candidate sentences; highest for a word in none."""
    present = np.array([[term in c.terms for term in question_terms] for c in candidates], dtype=np.float64)
    idf: npt.NDArray[np.float64] = np.log((len(candidates) + 1) / (present.sum(axis=0) + 0.5))
    return idf


def _weighted_overlap(
    question_terms: list[str], idf: npt.NDArray[np.float64], candidates: list[_Candidate]
) -> npt.NDArray[np.float64]:
    """Per candidate, the share of the question's content words it contains, each word weighted by its
    inverse frequency among the candidates.

    The topic words of a question ("Eiffel Tower") occur in most sentences of a relevant context and so
    tell little; the word that asks ("tall") picks out the answer. A question word found in no sentence
    weighs most of all, which pulls the best score down when the contexts miss what is asked.
    A question of stop words only ("What is it?") overlaps nothing.
    """
    if not question_terms:
        return np.zeros(len(candidates))
    present = np.array([[term in c.terms for term in question_terms] for c in candidates], dtype=np.float64)
    weighted: npt.NDArray[np.float64] = present @ idf / idf.sum()
    return weighted


def _embedding_text(hit: SearchHit, sentence: str) -> str:
    """The sentence as embedded: after its document's title, which often names what "it" or "the tower"
    refers to and which the question is likely to mention."""
    return f"{hit.title}: {sentence}" if hit.title else sentence


def _with_terminal(sentence: str) -> str:
    return sentence if _TERMINAL.search(sentence) else sentence + "."


def _pieces(text: str) -> list[str]:
    """``text`` cut after each space, so that the pieces concatenate back to exactly ``text``."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]
