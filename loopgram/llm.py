"""The model client: Chat Completions over the `openai` client, streaming, with deadlines.

The same code talks to vLLM in production and to the built-in server by default. Every
failure a user can meet (server down, slow, erroring) becomes `ModelUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from loopgram import metrics
from loopgram.errors import ModelUnavailableError
from loopgram.settings import LLMSettings

log = logging.getLogger(__name__)

ChatMessage = dict[str, str]


class LLMClient:
    def __init__(self, settings: LLMSettings, *, client: AsyncOpenAI | None = None) -> None:
        self.settings = settings
        api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "EMPTY"
        self._client = client or AsyncOpenAI(
            base_url=settings.base_url,
            api_key=api_key,
            timeout=openai.Timeout(settings.llm_timeout, connect=5.0),
            max_retries=1,
        )

    @property
    def default_model(self) -> str:
        return self.settings.llm_model

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text deltas. Raises ModelUnavailableError on any transport or server failure."""
        started = time.monotonic()
        deadline = started + self.settings.llm_timeout
        outcome = "cancelled"  # the consumer stopped reading (or was cancelled)
        stream: openai.AsyncStream[ChatCompletionChunk] | None = None
        try:
            opened: openai.AsyncStream[ChatCompletionChunk] = await asyncio.wait_for(
                self._client.chat.completions.create(
                    model=model or self.default_model,
                    messages=list(messages),  # type: ignore[arg-type]
                    stream=True,
                    temperature=self.settings.llm_temperature
                    if temperature is None
                    else temperature,
                    max_tokens=max_tokens or self.settings.llm_max_tokens,
                ),
                timeout=self.settings.llm_first_token_timeout,
            )
            stream = opened
            iterator = opened.__aiter__()
            first = True
            while True:
                budget = (
                    self.settings.llm_first_token_timeout
                    if first
                    else max(0.1, deadline - time.monotonic())
                )
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), timeout=budget)
                except StopAsyncIteration:
                    break
                if first:
                    metrics.MODEL_FIRST_TOKEN_SECONDS.observe(time.monotonic() - started)
                first = False
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
            outcome = "ok"
        except TimeoutError as exc:
            outcome = "timeout"
            log.warning("llm.timeout base_url=%s", self.settings.base_url)
            raise ModelUnavailableError("model timed out", key="error-model-slow") from exc
        except openai.APIError as exc:
            outcome = "error"
            log.warning("llm.unavailable base_url=%s error=%s", self.settings.base_url, exc)
            raise ModelUnavailableError(str(exc)) from exc
        finally:
            if stream is not None and outcome != "ok":
                # A consumer that stops early (the leak guard, a cancelled answer) closes the
                # HTTP response now, so the server stops generating; left to the garbage
                # collector, httpx's stream closes out of order and logs a RuntimeError.
                with contextlib.suppress(Exception):
                    await stream.close()
            metrics.MODEL_REQUESTS.labels(outcome=outcome).inc()
            metrics.MODEL_SECONDS.labels(outcome=outcome).observe(time.monotonic() - started)

    async def complete(self, messages: Sequence[ChatMessage], **kwargs: Any) -> str:
        return "".join([delta async for delta in self.stream_chat(messages, **kwargs)])

    async def close(self) -> None:
        await self._client.close()
