"""Follow-up questions made standalone: "and when do they expire?" after a question about leave days becomes
a question retrieval can answer on its own."""

from __future__ import annotations

from collections.abc import Sequence

from ragserve.errors import InvalidRequestError, LLMError
from ragserve.llm.gateway import LLMGateway
from ragserve.llm.llm import ChatMessage

CONDENSE_PROMPT_VERSION = "condense-v1"
_MAX_HISTORY_TURNS = 6
_MAX_QUESTION_TOKENS = 96


def split_question(turns: Sequence[ChatMessage]) -> tuple[str, list[ChatMessage]]:
    """The last user message with text, and the user and assistant turns before it. Raises
    ``InvalidRequestError`` when there is no such message."""
    for index in range(len(turns) - 1, -1, -1):
        message = turns[index]
        if message.role == "user" and message.content.strip():
            history = [m for m in turns[:index] if m.role in ("user", "assistant") and m.content.strip()]
            return message.content.strip(), history[-_MAX_HISTORY_TURNS:]
    raise InvalidRequestError("messages must contain a user message with text")


async def standalone_question(
    turns: Sequence[ChatMessage], gateway: LLMGateway | None, principal: str = "anonymous"
) -> str:
    """The last user question rewritten to stand alone, using the earlier turns. The model rewrites it when
    a gateway answers; otherwise the previous user question is prepended, which gives retrieval the topic."""
    question, history = split_question(turns)
    if not history:
        return question
    if gateway is not None:
        prompt = _condense_prompt(history, question)
        try:
            completion = await gateway.complete(prompt, max_tokens=_MAX_QUESTION_TOKENS, principal=principal)
        except LLMError:
            pass
        else:
            lines = completion.text.strip().splitlines()
            rewritten = lines[0].strip(" \"'") if lines else ""
            # A base model may echo the prompt instead of answering it: keep only a real rewrite.
            if rewritten and rewritten not in prompt[0].content:
                return rewritten
    earlier = [m.content.strip() for m in history if m.role == "user"]
    return f"{earlier[-1]} {question}" if earlier else question


def _condense_prompt(history: Sequence[ChatMessage], question: str) -> tuple[ChatMessage, ...]:
    lines = "\n".join(f"{m.role}: {m.content.strip()}" for m in history)
    text = (
        "Rewrite the follow-up question so that it can be understood without the conversation. "
        "Reply with the rewritten question only.\n\n"
        f"Conversation:\n{lines}\n\nFollow-up question: {question}\nStandalone question:"
    )
    return (ChatMessage("user", text),)
