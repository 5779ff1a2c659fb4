"""The answer generator seam: a question and retrieved chunks in, a cited answer out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from ragserve.domain import Answer, AnswerDelta, SearchHit


@runtime_checkable
class AnswerGenerator(Protocol):
    """Writes an answer from ``contexts`` (best first). Citations' ``index`` n matches ``[n]`` in the text
    and refers to ``contexts[n - 1]``. Abstains (``abstained=True``) when the contexts do not answer."""

    @property
    def name(self) -> str:
        """The name reported in an answer's ``generator`` field."""
        ...

    async def generate(self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous") -> Answer:
        """The whole answer at once."""
        ...

    def stream(
        self, question: str, contexts: Sequence[SearchHit], *, principal: str = "anonymous"
    ) -> AsyncIterator[AnswerDelta | Answer]:
        """Pieces of text as they are produced, then the complete ``Answer`` as the last item."""
        ...
