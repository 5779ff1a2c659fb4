"""Request and response bodies of the OpenAI-compatible endpoints, in OpenAI's shapes plus ragserve's extra
fields (``citations``, ``generator``), which OpenAI clients keep as extra attributes."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ragserve.api.schemas import CitationPublic
from ragserve.domain import Answer, Metadata
from ragserve.llm.llm import ChatMessage

_CONVERSATION_ROLES = ("user", "assistant")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.text for part in self.content if part.type == "text" and part.text)
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """OpenAI's fields that ragserve does not use (``temperature``, ``tools``...) are accepted and ignored.
    ``k`` and ``filters`` are ragserve's own, as in ``/v1/answer``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=100)
    stream: bool = False
    k: int | None = Field(default=None, ge=1, le=50)
    filters: Metadata | None = None

    def turns(self) -> list[ChatMessage]:
        """The user and assistant turns; system prompts are ragserve's own."""
        return [ChatMessage(m.role, m.text()) for m in self.messages if m.role in _CONVERSATION_ROLES]  # type: ignore[arg-type]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    citations: list[CitationPublic]
    generator: str
    abstained: bool

    @classmethod
    def of(cls, answer: Answer, completion_id: str, created: int, model: str) -> ChatCompletionResponse:
        return cls(
            id=completion_id,
            created=created,
            model=model,
            choices=[ChatChoice(message=AssistantMessage(content=answer.text))],
            citations=[CitationPublic.of(c) for c in answer.citations],
            generator=answer.generator,
            abstained=answer.abstained,
        )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ragserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def of(
        cls, vectors: npt.NDArray[np.float32], model: str, tokens: int, encoding: Literal["float", "base64"]
    ) -> EmbeddingResponse:
        items = []
        for i, vector in enumerate(vectors):
            little_endian = vector.astype("<f4")
            value: list[float] | str = (
                base64.b64encode(little_endian.tobytes()).decode() if encoding == "base64" else little_endian.tolist()
            )
            items.append(EmbeddingItem(index=i, embedding=value))
        return cls(data=items, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
