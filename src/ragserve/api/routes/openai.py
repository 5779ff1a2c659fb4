"""OpenAI-compatible endpoints, so that tools speaking the OpenAI API can use ragserve: chat completions
answered from the documents (model ``ragserve`` or ``ragserve/<collection>``), the model list, and
embeddings with the model the index uses."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from ragserve.api.deps import QueryPrincipal, ServiceDep, require
from ragserve.api.openai_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
)
from ragserve.api.ratelimit import check_llm_quota
from ragserve.api.schemas import CitationPublic, ErrorResponse
from ragserve.domain import Answer, AnswerDelta
from ragserve.errors import NotFoundError, PayloadTooLargeError
from ragserve.llm.conversation import standalone_question

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require("query"))])

MODEL = "ragserve"
_MAX_EMBEDDING_INPUTS = 256


def _collection_of(model: str) -> str | None:
    """``ragserve`` is the default collection, ``ragserve/<name>`` a named one. Raises ``NotFoundError``."""
    if model == MODEL:
        return None
    prefix = f"{MODEL}/"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    raise NotFoundError(f"unknown model {model!r}: use {MODEL!r} or '{MODEL}/<collection>' (see GET /v1/models)")


def _chunk(completion_id: str, created: int, model: str, delta: dict[str, str], **extra: Any) -> ServerSentEvent:
    finish = extra.pop("finish_reason", None)
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return ServerSentEvent(data=json.dumps(body))


async def _chunks(
    stream: AsyncIterator[AnswerDelta | Answer], completion_id: str, created: int, model: str
) -> AsyncIterator[ServerSentEvent]:
    yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
    async for item in stream:
        if isinstance(item, AnswerDelta):
            yield _chunk(completion_id, created, model, {"content": item.text})
        else:
            citations = [CitationPublic.of(c).model_dump() for c in item.citations]
            yield _chunk(
                completion_id,
                created,
                model,
                {},
                finish_reason="stop",
                citations=citations,
                generator=item.generator,
                abstained=item.abstained,
            )
    yield ServerSentEvent(data="[DONE]")


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "with stream=true: chat.completion.chunk events"},
        **{code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429)},
    },
)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, service: ServiceDep, principal: QueryPrincipal
) -> ChatCompletionResponse | EventSourceResponse:
    """Answer the conversation's last user message from the documents; earlier turns make a follow-up
    question standalone. Citations come in the extra ``citations`` field (of the last chunk when streamed)."""
    collection = _collection_of(body.model)
    await check_llm_quota(request, principal)
    question = await standalone_question(body.turns(), service.llm, principal.label)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        stream = await service.stream_answer(question, body.k, collection, body.filters, principal)
        return EventSourceResponse(_chunks(stream, completion_id, created, body.model), ping=15)
    answer = await service.answer(question, body.k, collection, body.filters, principal)
    return ChatCompletionResponse.of(answer, completion_id, created, body.model)


@router.get("/models", response_model=ModelList)
async def list_models(service: ServiceDep, principal: QueryPrincipal) -> ModelList:
    """``ragserve`` (the default collection) and ``ragserve/<collection>`` for every collection."""
    collections = await service.list_collections(principal)
    return ModelList(data=[ModelCard(id=MODEL), *(ModelCard(id=f"{MODEL}/{c.name}") for c in collections)])


@router.post(
    "/embeddings",
    response_model=EmbeddingResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 413, 422)},
)
async def embeddings(body: EmbeddingRequest, service: ServiceDep) -> EmbeddingResponse:
    """Vectors from the packaged embedding model, equal to the ones the index holds for the same text."""
    texts = body.texts()
    if len(texts) > _MAX_EMBEDDING_INPUTS:
        raise PayloadTooLargeError(f"{len(texts)} inputs in one request; the limit is {_MAX_EMBEDDING_INPUTS}")
    embedder = service.embedder
    vectors = await anyio.to_thread.run_sync(lambda: embedder.embed(texts, kind="document"))
    tokens = sum(await anyio.to_thread.run_sync(embedder.count_tokens, texts))
    return EmbeddingResponse.of(vectors, embedder.model_id, tokens, body.encoding_format)
