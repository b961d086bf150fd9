"""A backend that answers with scripted text: for tests and demos, not for users.

Every attribute can be changed while the server runs, e.g.
``backend.fail = RuntimeError("down")`` makes the next requests fail with HTTP 500,
``backend.reply = "new text"`` changes the answer and ``backend.token_delay = 0.1``
slows the stream down.  ``backend.requests`` records every request received.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable

from .protocol import GenerationRequest, UnknownModelError

__all__ = ["ScriptedBackend", "split_words"]

_CHUNK_RE = re.compile(r"\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """Split ``text`` into word-sized chunks whose concatenation is ``text`` again."""
    return _CHUNK_RE.findall(text)


class ScriptedBackend:
    """Streams a fixed (or computed) reply word by word.

    ``reply`` is the answer text, or a function of the request returning it.
    ``first_token_delay`` / ``token_delay`` are seconds slept (without blocking the
    event loop) before the first and each following chunk.  ``fail``, when set, is
    raised before anything is yielded (the server answers 500).  At most
    ``request.max_tokens`` chunks are yielded.
    """

    def __init__(
        self,
        reply: Callable[[GenerationRequest], str] | str = "Hello from the scripted model.",
        *,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        fail: Exception | None = None,
        model_ids: Iterable[str] = ("loopgram-base",),
    ) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay
        self.fail = fail
        self.models: list[str] = list(model_ids)
        self.requests: list[GenerationRequest] = []
        self.started = 0
        """Generations that began (after ``fail`` and the model check)."""
        self.completed = 0
        """Generations that yielded their whole reply (or hit ``max_tokens``)."""
        self.aborted = 0
        """Generations closed early, e.g. because the client disconnected."""

    def model_ids(self) -> list[str]:
        return list(self.models)

    def text_for(self, request: GenerationRequest) -> str:
        return self.reply if isinstance(self.reply, str) else self.reply(request)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        if request.model not in self.models:
            raise UnknownModelError(request.model)
        chunks = split_words(self.text_for(request))[: request.max_tokens]
        self.started += 1
        finished = False
        try:
            for index, piece in enumerate(chunks):
                delay = self.first_token_delay if index == 0 else self.token_delay
                if delay > 0:
                    await asyncio.sleep(delay)
                if index == len(chunks) - 1:
                    # Counted before the yield: a consumer that stops right after the
                    # last chunk (max_tokens reached) got the whole reply.
                    finished = True
                    self.completed += 1
                yield piece
            if not chunks:
                finished = True
                self.completed += 1
        finally:
            if not finished:
                self.aborted += 1
