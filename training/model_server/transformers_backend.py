"""A :class:`~training.model_server.protocol.GenerationBackend` on transformers + PEFT.

One base model is held in memory.  LoRA adapters are loaded onto it as named PEFT adapters
(a few MB each, no copy of the base weights) and chosen per request by ``request.model``:
the base model id generates with every adapter disabled, an adapter name with that adapter
active.  This mirrors vLLM's runtime LoRA serving, which production uses instead.

Concurrency: a single worker thread ("the model thread") runs every generation and every
adapter change.  Generations run one at a time in arrival order (a FIFO queue, so requests
wait their turn fairly), which is also what makes adapter switching safe: PEFT's active
adapter is model-wide state.  (A lock around the model guards against use from any other
thread as well.)  There is no batching.

Hot-swapping never fails an accepted request.  A request is queued together with the
adapter it was accepted for.  Loading adds weights under a fresh internal key, so it cannot
disturb queued requests and goes ahead of them (it waits only for the generation running).
Unloading or replacing a name hides the old weights from new requests at once, but frees
them with a job queued *behind* every request already accepted.

Streaming: ``model.generate`` runs in a helper thread with a streamer that hands token ids
back to the model thread, which turns them into text deltas (one per token, except that
bytes of an unfinished UTF-8 character are held back) and stops generation through a
``StoppingCriteria`` as soon as the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from peft import PeftConfig, PeftModel, PeftType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from .protocol import (
    AdapterError,
    AdapterExistsError,
    AdapterNotFoundError,
    GenerationRequest,
    UnknownAdapterError,
    UnknownModelError,
    iterate_in_thread,
)

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_ROLE_ALIASES = {"developer": "system", "tool": "user", "function": "user"}
_MAX_HELD_TOKENS = 4
"""A UTF-8 character spans at most 4 byte-level tokens; hold no more than that for one."""
_EXTRA_TOKENS = 8
"""Generated beyond ``max_tokens``: deltas that merged held tokens would otherwise make the
stream end one short of ``max_tokens``, and the server then reports ``stop`` instead of
``length``.  The server stops reading (and so generating) at ``max_tokens`` deltas anyway."""

_End = None
_Item = list[int] | BaseException | None
_URGENT, _NORMAL, _LAST = 0, 1, 2


class _ModelThread(Executor):
    """One worker thread: jobs run one at a time, in submission order within a priority.

    ``submit`` (what ``loop.run_in_executor`` uses) queues a normal job; ``submit_urgent``
    one that runs before every queued normal job.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ConcurrentFuture[Any]:
        return self._put(_NORMAL, fn, args, kwargs)

    def submit_urgent(self, fn: Callable[..., Any], /, *args: Any) -> ConcurrentFuture[Any]:
        return self._put(_URGENT, fn, args, {})

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        _, _, job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    job[0].cancel()
            self._jobs.put((_LAST, next(self._order), None))
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _put(
        self, priority: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ConcurrentFuture[Any]:
        future: ConcurrentFuture[Any] = ConcurrentFuture()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((priority, next(self._order), (future, fn, args, kwargs)))
        return future

    def _run(self) -> None:
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


@dataclass(frozen=True, slots=True)
class _Adapter:
    """A loaded adapter.  ``key`` is its PEFT name: public names may contain ``.`` or ``/``,
    which PEFT's module dicts reject, and a replaced adapter needs a fresh key while the old
    weights are still in use."""

    key: str
    path: str


class _QueueStreamer(BaseStreamer):
    """Hands each new token id batch from ``generate`` to the consuming thread."""

    def __init__(self, sink: queue.SimpleQueue[_Item]) -> None:
        self._sink = sink
        self._prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:  # generate() first pushes the prompt itself
            self._prompt = False
            return
        self._sink.put(value.reshape(-1).tolist())

    def end(self) -> None:
        """The producer thread signals the end itself, also when generate() raises."""


class _StopWhenSet(StoppingCriteria):
    """Ends ``generate`` at the next token once any of the events is set."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor:
        stop = any(event.is_set() for event in self._events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _IncrementalDecoder:
    """Token ids in, text deltas out (the prefix/read offset scheme of TGI and vLLM).

    Decoding a short window of previous tokens together with the new ones keeps the spaces
    SentencePiece-style tokenizers attach to word starts, at O(1) cost per token.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, ids: list[int]) -> str:
        self._ids.extend(ids)
        held = len(self._ids) - self._read_offset
        return self._advance(force=held > _MAX_HELD_TOKENS)

    def flush(self) -> str:
        return self._advance(force=True) if len(self._ids) > self._read_offset else ""

    def _advance(self, *, force: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) and not force:
            return ""  # e.g. a skipped special token, or nothing printable yet
        if new_text.endswith("\ufffd") and not force:
            return ""  # the rest of a multi-byte character is still to come
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]


class TransformersBackend:
    """Serves ``model_path`` as ``model_id`` plus up to ``max_loras`` LoRA adapters.

    ``device`` is a torch device (``"cpu"``, ``"cuda"``); on CPU the model runs in float32.
    ``threads`` sets torch's intra-op thread count (process-wide).  Loading takes a few
    seconds; call :meth:`close` when done.  ``model_ids``, ``generate`` and the adapter
    methods must be called from the event loop that serves requests.
    """

    def __init__(
        self,
        model_path: Path,
        model_id: str = "loopgram-base",
        *,
        max_loras: int = 4,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        if max_loras < 0:
            raise ValueError(f"max_loras must be >= 0, got {max_loras}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model_id = model_id
        self.model_path = Path(model_path)
        self.max_loras = max_loras
        self.device = torch.device(device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        dtype = torch.float32 if self.device.type == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        self._model = cast(Any, model).to(self.device).eval()
        self._peft: PeftModel | None = None
        self._max_context: int | None = getattr(self._model.config, "max_position_embeddings", None)
        # Owned by the event loop: which adapter each public name means right now.
        self._adapters: dict[str, _Adapter] = {}
        self._loading: dict[str, _Adapter] = {}
        self._keys = itertools.count(1)
        self._executor = _ModelThread("loopgram-model")
        weakref.finalize(self, self._executor.shutdown, wait=False)  # if close() is forgotten
        self._model_lock = threading.Lock()
        # Fast tokenizers may reject concurrent calls ("Already borrowed"); count_tokens runs
        # on the event loop while the model thread decodes.
        self._tokenizer_lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def model_ids(self) -> list[str]:
        return [self.model_id, *self._adapters]

    def adapter_names(self) -> list[str]:
        return list(self._adapters)

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        # Resolving the adapter and queueing the work happen in the same event-loop step, so
        # an unload that comes later is queued behind this request.
        adapter = self._route(request.model)
        produce = functools.partial(self._produce, request, adapter)
        async for delta in iterate_in_thread(produce, executor=self._executor):
            yield delta

    async def load_adapter(self, name: str, path: str | Path, *, replace: bool = False) -> None:
        """Load the PEFT LoRA adapter saved in ``path`` as ``name`` (see ``AdapterBackend``)."""
        if not name:
            raise AdapterError("Both 'lora_name' and 'lora_path' must be provided.")
        if name == self.model_id:
            raise AdapterError(f"'{name}' is the base model's id; give the adapter another name.")
        if name in self._loading or (name in self._adapters and not replace):
            raise AdapterExistsError(name)
        held = len(self._adapters.keys() | self._loading.keys())
        if name not in self._adapters and held >= self.max_loras:
            raise AdapterError(
                f"Cannot load LoRA adapter '{name}': {self.max_loras} adapters are loaded "
                "(max_loras); unload one first."
            )
        # Checked here, not in the queue, so a wrong path fails fast (a few stat calls).
        folder = _adapter_folder(path)
        if folder is None:
            raise AdapterNotFoundError(f"Loading lora {name} failed: No adapter found for {path}")

        adapter = _Adapter(key=f"lora{next(self._keys)}", path=str(folder))
        self._loading[name] = adapter
        future = asyncio.wrap_future(self._executor.submit_urgent(self._load_sync, name, adapter))
        # Published by a callback, not after the await: a load whose HTTP client went away
        # still completes, and must not leave weights behind that no name points to.
        future.add_done_callback(functools.partial(self._publish, name, adapter))
        await asyncio.shield(future)

    async def unload_adapter(self, name: str) -> None:
        """Stop serving ``name``; its weights are freed after the requests already queued."""
        adapter = self._adapters.pop(name, None)
        # A load of the same name still in progress is superseded: _publish will retire it.
        pending = self._loading.pop(name, None)
        if adapter is None and pending is None:
            raise UnknownAdapterError(name)
        if adapter is not None:
            self._retire(adapter)
        logger.info("Unloaded LoRA adapter %r", name)

    def close(self) -> None:
        """Stop the model thread; queued requests are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------- adapters

    def _route(self, model: str) -> _Adapter | None:
        if model == self.model_id:
            return None
        adapter = self._adapters.get(model)
        if adapter is None:
            raise UnknownModelError(model)
        return adapter

    def _publish(self, name: str, adapter: _Adapter, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            if self._loading.get(name) is adapter:
                del self._loading[name]
            return
        if self._loading.get(name) is not adapter:  # unloaded while it was loading
            self._retire(adapter)
            return
        del self._loading[name]
        previous = self._adapters.get(name)
        self._adapters[name] = adapter
        if previous is not None:
            self._retire(previous)
        logger.info("Loaded LoRA adapter %r from %s", name, adapter.path)

    def _retire(self, adapter: _Adapter) -> None:
        # Queued, not awaited: requests accepted before this point may still use the weights.
        future = self._executor.submit(self._delete_sync, adapter.key)
        future.add_done_callback(_log_failure)

    def _load_sync(self, name: str, adapter: _Adapter) -> None:
        with self._model_lock:
            try:
                config = PeftConfig.from_pretrained(adapter.path)
            except Exception as exc:
                raise AdapterError(f"Loading lora {name} failed: {exc}") from exc
            if config.peft_type != PeftType.LORA:
                raise AdapterError(
                    f"Loading lora {name} failed: only LoRA adapters are supported, "
                    f"got {config.peft_type}."
                )
            config.inference_mode = True
            try:
                if self._peft is None:
                    # Wraps the base model in place: from now on it carries LoRA layers, which
                    # pass inputs straight through while no adapter is active.
                    self._peft = cast(
                        PeftModel, get_peft_model(self._model, config, adapter_name=adapter.key)
                    )
                self._peft.load_adapter(adapter.path, adapter_name=adapter.key)
            except Exception as exc:
                self._delete_locked(adapter.key)  # undo a half-injected adapter
                raise AdapterError(f"Loading lora {name} failed: {exc}") from exc
            self._model.eval()

    def _delete_sync(self, key: str) -> None:
        with self._model_lock:
            self._delete_locked(key)

    def _delete_locked(self, key: str) -> None:
        peft = self._peft
        if peft is None or key not in peft.peft_config:
            return
        if peft.active_adapter == key:
            # Deleting the active adapter makes PEFT pick another one with a warning.
            others = [other for other in peft.peft_config if other != key]
            if others:
                peft.set_adapter(others[0], inference_mode=True)
        peft.delete_adapter(key)

    @contextlib.contextmanager
    def _activated(self, adapter: _Adapter | None) -> Iterator[None]:
        peft = self._peft
        if adapter is None:
            if peft is None or not peft.peft_config:
                yield
                return
            if peft.active_adapter not in peft.peft_config:  # stale after deleting them all
                peft.set_adapter(next(iter(peft.peft_config)), inference_mode=True)
            with peft.disable_adapter():
                yield
            return
        if peft is None or adapter.key not in peft.peft_config:
            raise RuntimeError(f"LoRA weights {adapter.key} are not loaded")  # a bug
        peft.set_adapter(adapter.key, inference_mode=True)
        yield

    # ------------------------------------------------------------- generation

    def _produce(
        self, request: GenerationRequest, adapter: _Adapter | None, stop: threading.Event
    ) -> Iterator[str]:
        if stop.is_set():  # the client left while the request waited in the queue
            return
        with self._model_lock, self._activated(adapter):
            yield from self._stream(request, stop)

    def _stream(self, request: GenerationRequest, stop: threading.Event) -> Iterator[str]:
        input_ids = self._encode(request.messages)
        input_ids, max_new_tokens = self._fit_context(input_ids, request.max_tokens + _EXTRA_TOKENS)
        config = self._generation_config(request, max_new_tokens)
        # generate() samples from torch's global generator; the model thread owns it while a
        # request runs, so seeding here makes a seeded request reproducible.
        if request.seed is not None:
            torch.manual_seed(request.seed)
        else:
            torch.seed()

        tokens: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        finished = threading.Event()
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "generation_config": config,
            "streamer": _QueueStreamer(tokens),
            "stopping_criteria": StoppingCriteriaList([_StopWhenSet(stop, finished)]),
        }
        worker = threading.Thread(
            target=self._run_generate, args=(kwargs, tokens), name="loopgram-generate", daemon=True
        )
        worker.start()
        decoder = _IncrementalDecoder(self._decode)
        try:
            while (item := tokens.get()) is not _End:
                if isinstance(item, BaseException):
                    raise item
                if delta := decoder.push(item):
                    yield delta
            if tail := decoder.flush():
                yield tail
        finally:
            finished.set()  # also when the consumer stopped early: end generate() now
            worker.join()

    def _run_generate(self, kwargs: dict[str, Any], tokens: queue.SimpleQueue[_Item]) -> None:
        try:
            self._model.generate(**kwargs)
        except BaseException as exc:  # handed to the consuming thread
            tokens.put(exc)
        finally:
            tokens.put(_End)

    def _encode(self, messages: list[dict[str, str]]) -> torch.Tensor:
        chat = [
            {"role": _ROLE_ALIASES.get(m["role"], m["role"]), "content": m["content"]}
            for m in messages
        ]
        with self._tokenizer_lock:
            if self._tokenizer.chat_template:
                prompt = self._tokenizer.apply_chat_template(
                    chat, tokenize=False, add_generation_prompt=True
                )
                ids = self._tokenizer(prompt, add_special_tokens=False)["input_ids"]
            else:  # a base model without a template: a plain transcript
                prompt = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"
                ids = self._tokenizer(prompt)["input_ids"]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _fit_context(self, input_ids: torch.Tensor, wanted: int) -> tuple[torch.Tensor, int]:
        """Cut the oldest prompt tokens if prompt + answer would not fit the context window.

        vLLM would answer 400 instead; for a chat bot, forgetting the start of a long
        conversation is the friendlier failure.
        """
        limit = self._max_context
        if not limit:
            return input_ids, wanted
        reserve = min(wanted, limit // 2)
        if input_ids.shape[1] + reserve > limit:
            keep = limit - reserve
            logger.warning("Prompt of %d tokens cut to its last %d", input_ids.shape[1], keep)
            input_ids = input_ids[:, -keep:]
        return input_ids, max(1, min(wanted, limit - input_ids.shape[1]))

    def _generation_config(
        self, request: GenerationRequest, max_new_tokens: int
    ) -> GenerationConfig:
        config: GenerationConfig = copy.deepcopy(self._model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.num_return_sequences = 1
        if config.pad_token_id is None:
            config.pad_token_id = self._tokenizer.pad_token_id or self._tokenizer.eos_token_id
        if request.temperature > 0:
            config.do_sample = True
            config.temperature = request.temperature
            config.top_p = request.top_p
            if config.top_k is None:
                config.top_k = 0  # like vLLM: no top-k unless the model's own config sets one
        else:  # OpenAI's temperature 0 means greedy
            config.do_sample = False
            config.temperature = None
            config.top_p = None
            config.top_k = None
        return config

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return cast(
                str,
                self._tokenizer.decode(
                    ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
                ),
            )


def _adapter_folder(path: str | Path) -> Path | None:
    """``path`` as a folder if it holds a PEFT adapter (config and weights), else ``None``."""
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        return None
    if not any((folder / weights).is_file() for weights in _ADAPTER_WEIGHTS):
        return None
    return folder


def _log_failure(future: ConcurrentFuture[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("Freeing LoRA weights failed: %r", exc, exc_info=exc)
