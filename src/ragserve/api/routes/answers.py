"""Answers with citations, whole or streamed as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from ragserve.api.deps import QueryPrincipal, ServiceDep, require
from ragserve.api.ratelimit import check_llm_quota
from ragserve.api.schemas import AnswerRequest, AnswerResponse, CitationPublic, ErrorResponse
from ragserve.domain import Answer, AnswerDelta

router = APIRouter(prefix="/v1", tags=["answers"], dependencies=[Depends(require("query"))])


async def _events(stream: AsyncIterator[AnswerDelta | Answer]) -> AsyncIterator[ServerSentEvent]:
    async for item in stream:
        if isinstance(item, AnswerDelta):
            yield ServerSentEvent(event="token", data=json.dumps({"text": item.text}))
        else:
            citations = [CitationPublic.of(c).model_dump() for c in item.citations]
            yield ServerSentEvent(event="citations", data=json.dumps(citations))
            done = {"answer": item.text, "abstained": item.abstained, "generator": item.generator}
            yield ServerSentEvent(event="done", data=json.dumps(done))


@router.post(
    "/answer",
    response_model=AnswerResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "with stream=true: token, citations, done events",
        },
        **{code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429)},
    },
)
async def answer(
    request: Request, body: AnswerRequest, service: ServiceDep, principal: QueryPrincipal
) -> AnswerResponse | EventSourceResponse:
    """Answer a question from the documents, citing the passages used as [n]."""
    await check_llm_quota(request, principal)
    if body.stream:
        stream = await service.stream_answer(body.question, body.k, body.collection, body.filters, principal)
        return EventSourceResponse(_events(stream), ping=15)
    return AnswerResponse.of(await service.answer(body.question, body.k, body.collection, body.filters, principal))
