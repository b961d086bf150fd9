"""The contract between the HTTP layer (``app.py``) and a text-generation backend.

The HTTP layer speaks the OpenAI/vLLM Chat Completions wire format; a backend only
turns a :class:`GenerationRequest` into a stream of text deltas.  Keeping the
contract this small lets the same server run the placeholder n-gram model today and
a transformers + PEFT backend (with LoRA adapters addressed by ``model``) later.

Contract for ``GenerationBackend.generate``:

* It is an async generator: ``async def generate(self, request): ... yield delta``.
* It raises :class:`UnknownModelError` if ``request.model`` is not one of
  :meth:`GenerationBackend.model_ids` (the server checks this first, but a backend
  that can unload adapters must re-check).
* Each yielded, non-empty delta counts as one completion token: the server stops
  reading after ``request.max_tokens`` deltas and reports ``finish_reason="length"``.
  A backend whose deltas can span several tokens may add a
  ``count_tokens(text) -> int`` method (see :class:`TokenCounter`); the server then
  uses it for the ``usage`` numbers.
* The server enforces ``request.stop`` itself (the stop string is not returned),
  so a backend may ignore it or use it as a hint to stop early.
* CPU/GPU-bound work must not run on the event loop: use :func:`iterate_in_thread`.
* When the client goes away the server closes the generator (``aclose``), so
  ``finally`` blocks in a backend run and :func:`iterate_in_thread` signals the
  worker thread to stop.

A backend that can hot-load LoRA adapters also implements :class:`AdapterBackend`; the
server then offers vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` and
lists the adapters in ``/v1/models``.  It reports failures with :class:`AdapterError`
subclasses, whose ``status`` and ``error_type`` follow vLLM.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar, cast, runtime_checkable

__all__ = [
    "AdapterBackend",
    "AdapterError",
    "AdapterExistsError",
    "AdapterNotFoundError",
    "GenerationBackend",
    "GenerationRequest",
    "TokenCounter",
    "UnknownAdapterError",
    "UnknownModelError",
    "iterate_in_thread",
]

T = TypeVar("T")

# LoRA adapters a server holds at once: each of the five assistants' active adapter and its
# canary (a promotion unloads the adapter it replaces). A test keeps it >= 2 × ASSISTANTS.
DEFAULT_MAX_LORAS = 10


@dataclass(slots=True)
class GenerationRequest:
    """One chat completion to generate, already validated by the server.

    ``messages`` are ``{"role": ..., "content": ...}`` dicts with text content only.
    ``model`` is the served model id the client asked for; later it may name a LoRA
    adapter instead of the base model.
    """

    messages: list[dict[str, str]]
    model: str
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class UnknownModelError(LookupError):
    """Raised by a backend when ``request.model`` is not served (HTTP 404)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


class GenerationBackend(Protocol):
    """What the model server needs from a model implementation."""

    def model_ids(self) -> list[str]:
        """Ids accepted in ``request.model``; the first one is the base model."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield text deltas for ``request`` (implement as ``async def`` + ``yield``)."""
        ...


class AdapterError(Exception):
    """A LoRA adapter could not be loaded or unloaded (vLLM answers 400 ``BadRequestError``)."""

    status: ClassVar[int] = 400
    error_type: ClassVar[str] = "BadRequestError"


class AdapterNotFoundError(AdapterError):
    """The adapter folder or its files do not exist (vLLM: 404 ``NotFoundError``)."""

    status = 404
    error_type = "NotFoundError"


class AdapterExistsError(AdapterError):
    """An adapter of that name is already loaded (vLLM: 400 ``InvalidUserInput``)."""

    error_type = "InvalidUserInput"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The lora adapter '{name}' has already been loaded. If you want to load the "
            "adapter in place, set 'load_inplace' to True."
        )
        self.name = name


class UnknownAdapterError(AdapterError):
    """Unloading an adapter that is not loaded (vLLM: 404 ``NotFoundError``)."""

    status = 404
    error_type = "NotFoundError"

    def __init__(self, name: str) -> None:
        super().__init__(f"The lora adapter '{name}' cannot be found.")
        self.name = name


@runtime_checkable
class AdapterBackend(GenerationBackend, Protocol):
    """A backend serving LoRA adapters on one base model, addressed by ``request.model``.

    ``model_ids()`` lists the base model first, then :meth:`adapter_names`.
    """

    def adapter_names(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        ...

    async def load_adapter(self, name: str, path: str | Path, *, replace: bool = False) -> None:
        """Load the PEFT adapter saved in ``path`` as ``name``.

        With ``replace`` an adapter already loaded under ``name`` is swapped for the new one
        (vLLM's ``load_inplace``); otherwise that is :class:`AdapterExistsError`.  Requests
        already accepted keep the adapter they were accepted with.
        """
        ...

    async def unload_adapter(self, name: str) -> None:
        """Stop serving ``name`` (:class:`UnknownAdapterError` if it is not loaded).

        Requests already accepted for it still finish with it.
        """
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """Optional extra for a backend that can count tokens exactly (for ``usage``)."""

    def count_tokens(self, text: str) -> int: ...


_ITEM, _DONE, _ERROR = 0, 1, 2


async def iterate_in_thread(
    produce: Callable[[threading.Event], Iterator[T]],
    *,
    executor: Executor | None = None,
) -> AsyncGenerator[T, None]:
    """Run a blocking generator in a worker thread and yield its items here.

    ``produce(stop)`` is called in the thread and must return an iterator; it should
    check ``stop.is_set()`` between expensive steps (e.g. from a transformers
    ``StoppingCriteria``).  ``stop`` is set when the consumer stops early (client
    disconnect, ``max_tokens`` reached, stop string found, cancellation); the thread
    also stops at its next item by itself.  Exceptions from the thread are re-raised
    in the consumer.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    stop = threading.Event()

    def post(kind: int, value: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            stop.set()

    def work() -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = produce(stop)
            for item in iterator:
                if stop.is_set():
                    return
                post(_ITEM, item)
        except BaseException as exc:  # handed to the consumer, never lost
            post(_ERROR, exc)
        else:
            post(_DONE, None)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    loop.run_in_executor(executor, work)
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield cast(T, value)
            elif kind == _DONE:
                return
            else:
                assert isinstance(value, BaseException)
                raise value
    finally:
        stop.set()
