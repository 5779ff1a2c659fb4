"""A sampled, background judge of answer groundedness: a quality signal for dashboards, never a gate.

For a sampled share of answers that did not abstain, a background task scores in [0, 1] how well the answer
is supported by the passages it cites (by every passage it was written from, when it cites none) and
observes the score in ``ragserve_answer_groundedness_score{judge}``. With an LLM gateway the model grades
the answer (``judge="llm"``); without one, or when the model fails or answers something other than a
number, the lexical support score stands in (``judge="lexical"``): per answer sentence, the share of its
content words (stemmed, stop words removed) that occur in the evidence, averaged over sentences, so one
unsupported claim lowers the score however long the supported ones are.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragserve.domain import Answer, SearchHit
from ragserve.errors import LLMError
from ragserve.llm.gateway import LLMGateway
from ragserve.llm.llm import ChatMessage
from ragserve.llm.sentences import ContentWords, split_sentences, strip_references
from ragserve.observability.metrics import ANSWER_GROUNDEDNESS, timed

logger = logging.getLogger(__name__)

# Judgements in progress at most; more are skipped, so a slow judge model never piles up work.
_MAX_PENDING = 8
# Evidence shown to the judge model, in characters: enough for the few passages an answer cites.
_MAX_EVIDENCE_CHARS = 8000
_NUMBER = re.compile(r"\d*\.\d+|\d+")
JUDGE_SYSTEM_PROMPT = (
    "You check whether an answer is supported by the given sources. Reply with a single number between 0 and "
    "1: 1 if every statement of the answer is stated in or directly follows from the sources, 0 if none is, "
    "a fraction for partly supported answers. Reply with the number only."
)
_words = ContentWords()


@dataclass(frozen=True, slots=True)
class Judgement:
    """A groundedness ``score`` in [0, 1] and the judge that gave it: ``llm`` or ``lexical``."""

    score: float
    judge: str


def lexical_support(answer: str, evidence: Sequence[str]) -> float:
    """The mean over the answer's sentences of the share of their content words found in ``evidence``;
    0.0 for an answer without content words. Citation markers ("[2]") are not words."""
    supported: set[str] = set()
    for text in evidence:
        supported |= _words.of(text)
    shares = []
    for sentence in split_sentences(answer):
        terms = _words.of(strip_references(sentence))
        if terms:
            shares.append(len(terms & supported) / len(terms))
    return sum(shares) / len(shares) if shares else 0.0


def evidence_of(answer: Answer, contexts: Sequence[SearchHit]) -> list[str]:
    """The texts of the passages ``answer`` cites (citation n is ``contexts[n - 1]``), or of all contexts when
    it cites none."""
    cited = [contexts[c.index - 1].text for c in answer.citations if 1 <= c.index <= len(contexts)]
    return cited or [hit.text for hit in contexts]


def parse_score(reply: str) -> float:
    """The first number in the judge model's reply. Raises ``ValueError`` when there is none or it is not in
    [0, 1]."""
    match = _NUMBER.search(reply)
    score = float(match.group()) if match is not None else -1.0
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"the judge's reply has no score in [0, 1]: {reply[:80]!r}")
    return score


class GroundednessJudge:
    """Scores a ``sample_rate`` share of answers in background tasks; ``gateway`` (optional) is the model that
    grades. ``submit`` never raises and never waits; ``aclose`` cancels judgements in progress."""

    def __init__(self, sample_rate: float, gateway: LLMGateway | None = None, rng: random.Random | None = None) -> None:
        self._sample_rate = sample_rate
        self._gateway = gateway
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, question: str, answer: Answer, contexts: Sequence[SearchHit]) -> None:
        """Maybe judge ``answer`` in the background: if sampled, not an abstention, and fewer than a few
        judgements are in progress. Call from the event loop."""
        if answer.abstained or not answer.text.strip() or len(self._tasks) >= _MAX_PENDING:
            return
        if self._rng.random() >= self._sample_rate:
            return
        task = asyncio.get_running_loop().create_task(self._observe(question, answer, contexts), name="judge")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def judge(self, question: str, answer: Answer, contexts: Sequence[SearchHit]) -> Judgement:
        """The groundedness of ``answer``: the model's grade, or the lexical support score without a model or
        when it fails."""
        evidence = evidence_of(answer, contexts)
        if self._gateway is not None:
            try:
                return Judgement(await self._ask(self._gateway, question, answer.text, evidence), "llm")
            except (LLMError, ValueError) as exc:
                logger.info("the judge model gave no score, scoring lexically: %s", exc)
        return Judgement(lexical_support(answer.text, evidence), "lexical")

    async def drain(self) -> None:
        """Wait for the judgements in progress (graceful shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drain()

    async def _observe(self, question: str, answer: Answer, contexts: Sequence[SearchHit]) -> None:
        try:
            with timed("judge"):
                judgement = await self.judge(question, answer, contexts)
        except Exception:
            # A quality signal must never disturb the service: log and drop this sample.
            logger.exception("judging an answer's groundedness failed")
            return
        ANSWER_GROUNDEDNESS.labels(judge=judgement.judge).observe(judgement.score)

    @staticmethod
    async def _ask(gateway: LLMGateway, question: str, answer: str, evidence: Sequence[str]) -> float:
        sources = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(evidence, start=1))[:_MAX_EVIDENCE_CHARS]
        prompt = f"Sources:\n{sources}\n\nQuestion: {question}\n\nAnswer: {answer}\n\nScore:"
        messages = [ChatMessage("system", JUDGE_SYSTEM_PROMPT), ChatMessage("user", prompt)]
        completion = await gateway.complete(messages, max_tokens=8, principal="judge")
        return parse_score(completion.text)
