"""The language model seam: chat messages in, text out, whole or as it is produced, with the tokens it cost.

Providers (``OpenAICompatLLM``, ``LlamaCppLLM``) implement ``LLM`` and translate their failures into the
``LLMError`` tree of ``ragserve.errors`` by type; the gateway decides on retries and fallback from those types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request; ``is_estimated`` when the provider did not report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    is_estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole reply; ``provider`` is the name of the provider that wrote it."""

    text: str
    usage: Usage
    provider: str


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling limits of one request."""

    max_tokens: int = 512
    temperature: float = 0.0


@runtime_checkable
class LLM(Protocol):
    """A chat model behind one provider. Raises ``LLMError`` subclasses only (``LLMRetryableError`` for
    failures worth another try); never a vendor's own exception."""

    @property
    def name(self) -> str:
        """The provider's configured name, reported in answers and metric labels."""
        ...

    async def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Completion:
        """The whole reply."""
        ...

    def stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Usage]:
        """Text deltas as they arrive, then one ``Usage`` as the last item. Closing the iterator early cancels
        the upstream request."""
        ...

    async def aclose(self) -> None:
        """Release connections or the loaded model."""
        ...
