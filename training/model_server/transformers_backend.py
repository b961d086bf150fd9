"""A :class:`~training.model_server.protocol.GenerationBackend` on transformers + PEFT.

One base model is held in memory.  LoRA adapters are loaded onto it as named PEFT adapters
(a few MB each, no copy of the base weights) and chosen per request by ``request.model``:
the base model id generates with every adapter disabled, an adapter name with that adapter
active.  This mirrors vLLM's runtime LoRA serving, which production uses instead.

Concurrency: a single worker thread ("the model thread") runs every generation and every
adapter change, so PEFT's model-wide state (the active adapter) is only touched there (a lock
around the model guards against use from any other thread as well).  Requests are queued in
arrival order (FIFO).  When the thread becomes free it takes the request at the head of the
queue together with the requests queued right behind it, up to ``max_batch_size`` (waiting
up to ``batch_wait_s``, 20 ms, for more if there are fewer: requests sent together arrive a
few ms apart), and decodes them as one batch.  On CPU one decoding step for 16 rows costs
far less than 16 steps for one row, which is the whole gain.

Continuous batching (the default, ``running_batch``): the thread runs the decoding loop
itself.  Between two steps, finished rows leave the batch and the requests queued meanwhile
join it (prefilled, then decoded with the others), so a request that arrives while others
are being answered waits one step, not for the whole batch.  Models whose cache is not plain
full attention (sliding windows, recurrent state) or whose generation config changes the
logits (a repetition penalty, say) keep static batching: one left-padded batch per
``generate`` call, which a request arriving later waits for.  Each row keeps its own
request:

* adapter: a batch of one adapter (or of the base model only) runs with that adapter
  active; a mixed batch uses PEFT's mixed-adapter inference
  (``adapter_names=[key or "__base__", ...]``; no merged weights are ever used here);
* sampling: ``_RowSampler`` samples each row with its own temperature (0 = greedy), top_p
  and ``torch.Generator``: one uniform per step, so a seeded row draws the same numbers alone
  or in any batch (``sampling.sample_tokens``), leaving only the sampled token for the
  argmax;
* end: each row streams its new token and finishes at its end of sequence, its own token
  limit, after ``max_tokens`` deltas, or as soon as its client is gone, and answers at once
  (``_Stepper``, a stopping criterion, does this inside ``generate``; a finished row stays
  in a static batch, ignored yet still computed, until every row is finished).

Hot-swapping never fails an accepted request.  A request is queued together with the
adapter it was accepted for.  Loading adds weights under a fresh internal key, so it cannot
disturb queued requests and goes ahead of them: a running batch yields to it after the
current decoding step (its unfinished rows go back to the head of the queue with their
progress, and resume after the load with their prompt and tokens so far prefilled again).
Unloading or replacing a name hides the old weights from new requests at once, but frees
them with a job queued *behind* every request already accepted; a batch only ever takes (or,
running, lets join) the run of requests at the head of the queue, never past such a job.

Streaming: the model thread hands each row's text deltas to its consumer on the event loop
(one per token, except that bytes of an unfinished UTF-8 character are held back, decoded
incrementally per row).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import math
import queue
import threading
import time
import weakref
from collections import Counter
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
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from training.upstream_warnings import quiet_upstream_deprecations

from .prefix_cache import (
    KV,
    MIN_PREFIX_TOKENS,
    PrefixCache,
    PrefixedRow,
    cache_argument,
    compute_prefix,
    prefixed_batch,
)
from .protocol import (
    DEFAULT_MAX_LORAS,
    AdapterError,
    AdapterExistsError,
    AdapterNotFoundError,
    GenerationRequest,
    UnknownAdapterError,
    UnknownModelError,
)
from .running_batch import RunningBatch, supports_own_decoding
from .sampling import sample_tokens

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)
quiet_upstream_deprecations()  # PEFT warns on every adapter load otherwise

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_ROLE_ALIASES = {"developer": "system", "tool": "user", "function": "user"}
_MAX_HELD_TOKENS = 4
"""A UTF-8 character spans at most 4 byte-level tokens; hold no more than that for one."""
_EXTRA_TOKENS = 8
"""Generated beyond ``max_tokens``: deltas that merged held tokens would otherwise make the
stream end one short of ``max_tokens``, and the server then reports ``stop`` instead of
``length``.  The server stops reading (and so generating) at ``max_tokens`` deltas anyway."""

_URGENT, _NORMAL, _LAST = 0, 1, 2
_BASE_ROW = "__base__"
"""PEFT's name for "no adapter" in a mixed-adapter batch."""
_DELTA, _DONE, _ERROR = 0, 1, 2


class _Job:
    """One generation request on its way through the model thread.

    Created on the event loop; the model thread hands its text deltas back with :meth:`post`.
    ``stop`` is set when the consumer goes away (the client disconnected, ``max_tokens`` was
    reached, a stop string was found); the model thread then drops the row from its batch.
    """

    def __init__(
        self,
        request: GenerationRequest,
        adapter: _Adapter | None,
        run_batch: Callable[[list[_Job]], None],
    ) -> None:
        self.request = request
        self.adapter = adapter
        self.run_batch = run_batch
        self.stop = threading.Event()
        self.order = -1  # its place in the model thread's queue, kept when it is requeued
        self.row: _Row | None = None  # its progress, once it has been in a batch
        self.items: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def post(self, kind: int, value: object = None) -> None:
        """Thread-safe: queue a delta, the end, or an error for the consumer."""
        try:
            self._loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.stop.set()


class _ModelThread(Executor):
    """One worker thread: jobs run one at a time, in submission order within a priority.

    ``submit`` (what ``loop.run_in_executor`` uses) queues a normal job; ``submit_urgent``
    one that runs before every queued normal job.  ``submit_generation`` queues a normal job
    too, but when the thread reaches it, it also takes the generations queued right behind it
    (up to ``max_batch_size``, stopping at the first job of another kind; if that is fewer,
    waiting up to ``batch_wait_s`` for more to arrive) and runs them together as one batch.
    """

    def __init__(self, name: str, max_batch_size: int = 1, batch_wait_s: float = 0.0) -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._urgent = 0
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ConcurrentFuture[Any]:
        return self._put(_NORMAL, fn, args, kwargs)

    def submit_urgent(self, fn: Callable[..., Any], /, *args: Any) -> ConcurrentFuture[Any]:
        return self._put(_URGENT, fn, args, {})

    def submit_generation(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            job.order = next(self._order)
            self._jobs.put((_NORMAL, job.order, job))

    def requeue(self, jobs: list[_Job]) -> None:
        """Put preempted generations back where they were: ahead of every normal job queued
        after them, in particular ahead of freeing the weights they use."""
        with self._lock:
            for job in jobs:
                if self._closed:
                    job.post(_ERROR, RuntimeError("The model server is shutting down."))
                else:
                    self._jobs.put((_NORMAL, job.order, job))

    def take_generations(self, limit: int) -> list[_Job]:
        """Without waiting: up to ``limit`` generations from the head of the queue, stopping
        at the first job of another kind (it must still run after the ones before it)."""
        taken: list[_Job] = []
        while len(taken) < limit:
            try:
                entry = self._jobs.get_nowait()
            except queue.Empty:
                break
            if entry[0] != _NORMAL or not isinstance(entry[2], _Job):
                self._jobs.put(entry)  # same (priority, order) key: it keeps its place
                break
            if not entry[2].stop.is_set():  # skip clients that left while queued
                taken.append(entry[2])
        return taken

    @property
    def urgent_waiting(self) -> bool:
        """Whether an urgent job waits; a running batch then yields after its current step."""
        return self._urgent > 0

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
                    if isinstance(job, _Job):
                        job.post(_ERROR, RuntimeError("The model server is shutting down."))
                    else:
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
            if priority == _URGENT:
                self._urgent += 1
        return future

    def _run(self) -> None:
        while True:
            priority, _, job = self._jobs.get()
            if job is None:
                return
            if isinstance(job, _Job):
                self._run_generations(job)
                continue
            if priority == _URGENT:
                with self._lock:
                    self._urgent -= 1
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _run_generations(self, first: _Job) -> None:
        batch = [first] if not first.stop.is_set() else []
        # Only the run at the head of the queue: a job behind it (say, freeing an unloaded
        # adapter's weights) must still run after the generations accepted before it.
        # Requests sent together reach the queue a few ms apart: wait that long for them.
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                entry = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not isinstance(entry[2], _Job):
                self._jobs.put(entry)  # same (priority, order) key: it keeps its place
                break
            if not entry[2].stop.is_set():  # skip clients that left while queued
                batch.append(entry[2])
        if not batch:
            return
        try:
            batch[0].run_batch(batch)  # reports generation errors to the jobs itself
        except BaseException as exc:  # a bug: still, no consumer may wait forever
            logger.exception("Batch of %d generations failed", len(batch))
            for job in batch:
                job.post(_ERROR, exc)


@dataclass(frozen=True, slots=True)
class _Adapter:
    """A loaded adapter.  ``key`` is its PEFT name: public names may contain ``.`` or ``/``,
    which PEFT's module dicts reject, and a replaced adapter needs a fresh key while the old
    weights are still in use."""

    key: str
    path: str


class _Row:
    """One job's progress: its prompt, the tokens generated so far, its decoder and limit.

    Kept on the job, so a batch that yields to an adapter load can be resumed later: the
    prompt and the tokens so far are prefilled again and decoding goes on where it stopped.
    """

    def __init__(
        self, job: _Job, decode: Callable[[list[int]], str], prompt: list[int], limit: int
    ) -> None:
        self.job = job
        self.prompt = prompt
        self.tokens: list[int] = []
        self.decoder = _IncrementalDecoder(decode)
        self.limit = limit
        self.deltas = 0
        self.done = False
        self.prefix: tuple[int, ...] = ()
        """The start of the prompt whose keys and values come from the prefix cache."""
        self.generator: torch.Generator | None = None
        if job.request.temperature > 0:  # its own generator: a seed means the same in a batch
            self.generator = torch.Generator()
            if job.request.seed is not None:
                self.generator.manual_seed(job.request.seed)
            else:
                self.generator.seed()

    @property
    def context(self) -> list[int]:
        return self.prompt + self.tokens

    @property
    def remaining(self) -> int:
        return self.limit - len(self.tokens)

    def step(self, token: int, eos: frozenset[int]) -> None:
        if self.job.stop.is_set():  # the consumer is gone: nothing to send, just stop
            self.done = True
            return
        self.tokens.append(token)
        if token in eos:
            self.finish()
            return
        if delta := self.decoder.push([token]):
            self.job.post(_DELTA, delta)
            self.deltas += 1
        # The server stops reading after max_tokens deltas; generating further would be waste.
        if self.deltas >= self.job.request.max_tokens or self.remaining <= 0:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.job.stop.is_set():
            if tail := self.decoder.flush():
                self.job.post(_DELTA, tail)
            self.job.post(_DONE)


class _Stepper(StoppingCriteria):
    """Called by ``generate`` once per decoding step with every row's new token: streams each
    row's text to its client and tells ``generate`` which rows are done (their end of
    sequence, their own token limit, or their client gone).  ``generate`` ends once all are,
    or at once when ``preempt()`` says that an urgent job waits (``preempted`` is then set).

    A stopping criterion rather than a streamer, because it is the hook that sees every step's
    tokens *and* can finish single rows."""

    def __init__(self, rows: list[_Row], eos: frozenset[int], preempt: Callable[[], bool]) -> None:
        self._rows = rows
        self._eos = eos
        self._preempt = preempt
        self.preempted = False

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor:
        for row, token in zip(self._rows, input_ids[:, -1].tolist(), strict=True):
            if not row.done:
                row.step(token, self._eos)
        done = [row.done for row in self._rows]
        if not all(done) and self._preempt():
            self.preempted = True
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowSampler(LogitsProcessor):
    """Per-row sampling inside one greedy ``generate`` call.

    ``generate`` applies one temperature/top-p and one random generator to the whole batch;
    here each sampling row is sampled with its own temperature, top_p and (seeded) generator,
    and all its other tokens are masked, so ``generate``'s argmax takes the sampled one.
    Greedy rows (temperature 0) pass through untouched.
    """

    def __init__(self, rows: list[_Row], top_k: int) -> None:
        self._picks = [(i, row) for i, row in enumerate(rows) if row.generator is not None]
        self._index = torch.tensor([i for i, _ in self._picks], dtype=torch.long)
        requests = [row.job.request for _, row in self._picks]
        self._temperature = torch.tensor([[r.temperature] for r in requests])
        self._top_p = torch.tensor([r.top_p for r in requests])
        self._top_k = top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.apply(scores)

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with each sampling row's draw as its only finite logit."""
        if not self._picks:
            return scores
        index = self._index.to(scores.device)
        logits = scores[index] / self._temperature.to(scores.device)
        if 0 < self._top_k < logits.shape[-1]:
            kth = torch.topk(logits, self._top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        uniforms = torch.cat(
            [torch.rand(1, generator=row.generator, dtype=torch.float64) for _, row in self._picks]
        )
        picked = sample_tokens(
            torch.softmax(logits, dim=-1),
            self._top_p.to(scores.device),
            uniforms.to(scores.device),
        )
        masked = torch.full_like(logits, -math.inf).scatter_(1, picked.unsqueeze(-1), 0.0)
        scores = scores.clone()
        scores[index] = masked
        return scores


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


_Activate = Callable[["_Adapter | None"], contextlib.AbstractContextManager[None]]
"""Sets one adapter (None: the base model) for the forward passes inside the context."""


class _AdapterScope:
    """The adapters a running batch's forward passes need, set once and kept across steps.

    Entering and leaving PEFT's ``disable_adapter`` costs ~30 ms on SmolLM2 and
    ``set_adapter`` ~7 ms, against a decoding step of 30–85 ms: doing it every step, as a
    context around each forward would, slows the loop down by a third or more.  So the
    setting changes only when the batch's set of adapters does (a row joining or leaving
    with another adapter, or a prompt start to compute under one adapter).
    """

    def __init__(self, backend: TransformersBackend) -> None:
        self._backend = backend
        self._adapters: frozenset[_Adapter | None] | None = None
        self._stack = contextlib.ExitStack()

    def forward(self, rows: list[_Row]) -> Callable[..., Any]:
        """The model's forward with each of ``rows`` through its own adapter."""
        backend = self._backend
        adapters = frozenset(row.job.adapter for row in rows)
        if len(adapters) == 1:
            self._switch(adapters)
            return cast(Callable[..., Any], backend._model)
        if adapters != self._adapters:
            self.close()
            backend._mixed_adapters(rows)
            self._adapters = adapters
        peft = backend._peft
        assert peft is not None  # rows with two adapters mean one is loaded
        return functools.partial(peft, adapter_names=backend._adapter_keys(rows))

    @contextlib.contextmanager
    def using(self, adapter: _Adapter | None) -> Iterator[None]:
        """`_Activate` for computing a prompt start: the setting stays for the steps after."""
        self._switch(frozenset((adapter,)))
        yield

    def close(self) -> None:
        self._stack.close()
        self._adapters = None

    def _switch(self, adapters: frozenset[_Adapter | None]) -> None:
        if adapters == self._adapters:
            return
        self.close()
        self._stack.enter_context(self._backend._activated(next(iter(adapters))))
        self._adapters = adapters


class TransformersBackend:
    """Serves ``model_path`` as ``model_id`` plus up to ``max_loras`` LoRA adapters.

    ``device`` is a torch device (``"cpu"``, ``"cuda"``); on CPU the model runs in float32.
    ``threads`` sets torch's intra-op thread count (process-wide).  Up to ``max_batch_size``
    requests waiting together are generated as one batch (1 turns batching off); a batch that
    is not full waits up to ``batch_wait_s`` for more requests first.  Loading takes a few
    seconds; call :meth:`close` when done.  ``model_ids``, ``generate`` and the adapter
    methods must be called from the event loop that serves requests.
    """

    def __init__(
        self,
        model_path: Path,
        model_id: str = "loopgram-base",
        *,
        max_loras: int = DEFAULT_MAX_LORAS,
        device: str = "cpu",
        threads: int | None = None,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.02,
        prefix_cache_mb: float = 256.0,
        continuous_batching: bool = True,
    ) -> None:
        if max_loras < 0:
            raise ValueError(f"max_loras must be >= 0, got {max_loras}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
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
        generation = self._model.generation_config
        self._eos = frozenset(_ids(generation.eos_token_id) or _ids(self._tokenizer.eos_token_id))
        # Like vLLM: no top-k unless the model's own generation config sets one.
        self._top_k: int = generation.top_k or 0
        # Owned by the event loop: which adapter each public name means right now.
        self._adapters: dict[str, _Adapter] = {}
        self._loading: dict[str, _Adapter] = {}
        self._keys = itertools.count(1)
        self._executor = _ModelThread("loopgram-model", max_batch_size, batch_wait_s)
        weakref.finalize(self, self._executor.shutdown, wait=False)  # if close() is forgotten
        self._model_lock = threading.Lock()
        # Fast tokenizers may reject concurrent calls ("Already borrowed"); count_tokens runs
        # on the event loop while the model thread decodes.
        self._tokenizer_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._batch_sizes: Counter[int] = Counter()
        # Touched on the model thread only, under the model lock.
        plain_cache = cache_argument(self._model)
        self._cache_argument = plain_cache if prefix_cache_mb > 0 else None
        self.prefixes = PrefixCache(int(prefix_cache_mb * 1024**2))
        self._running_cache = (
            plain_cache
            if continuous_batching and plain_cache and supports_own_decoding(generation)
            else None
        )
        """The cache argument when rows join and leave between steps (`running_batch`)."""

    # ------------------------------------------------------------------ public API

    def model_ids(self) -> list[str]:
        return [self.model_id, *self._adapters]

    def adapter_names(self) -> list[str]:
        return list(self._adapters)

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        # Resolving the adapter and queueing the job happen in the same event-loop step, so
        # an unload that comes later is queued behind this request.
        job = _Job(request, self._route(request.model), self._run_batch)
        self._executor.submit_generation(job)
        try:
            while True:
                kind, value = await job.items.get()
                if kind == _DELTA:
                    yield cast(str, value)
                elif kind == _DONE:
                    return
                else:
                    raise cast(BaseException, value)
        finally:
            job.stop.set()  # the model thread drops the row at its next step

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size the model thread has started (a batch of 1
        included); with continuous batching, how many rows joined at once (the first rows of
        a batch, then those joining it between steps)."""
        with self._stats_lock:
            return dict(self._batch_sizes)

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
        self.prefixes.drop_adapter(key)

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

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Runs on the model thread: generate for ``jobs`` together, whatever their adapters."""
        if self._running_cache is not None:
            self._run_continuously(jobs, self._running_cache)
            return
        self._count_batch(len(jobs))
        try:
            with self._model_lock:
                rows = [self._row(job) for job in jobs]
                preempted = self._generate_rows(rows)
        except BaseException as exc:  # handed to every consumer still waiting, never lost
            for job in jobs:
                if job.row is None or not job.row.done:
                    job.post(_ERROR, exc)
            return
        unfinished = [row for row in rows if not row.done]
        if preempted:  # an adapter load goes first; these rows carry on after it
            self._executor.requeue([row.job for row in unfinished])
            return
        for row in unfinished:  # generate() ended without a reason of the row's own
            row.finish()

    def _count_batch(self, size: int) -> None:
        with self._stats_lock:
            self._batch_sizes[size] += 1

    def _run_continuously(self, jobs: list[_Job], cache_name: str) -> None:
        """Decode ``jobs`` step by step; between steps finished rows leave and the requests
        queued meanwhile join (`running_batch`), until none is left or an urgent job waits."""
        batch = RunningBatch(self._model.config, cache_name)
        scope = _AdapterScope(self)
        accepted = list(jobs)
        joining = jobs
        try:
            with self._model_lock, torch.no_grad(), contextlib.closing(scope):
                while True:
                    logits = []
                    if len(batch):
                        tokens = [row.tokens[-1] for row in batch.rows]
                        logits.append(batch.step(scope.forward(batch.rows), tokens))
                    if joining:
                        rows = [self._row(job) for job in joining]
                        self._count_batch(len(rows))
                        inputs = self._batch_inputs(rows, activate=scope.using)
                        logits.append(batch.prefill(scope.forward(rows), rows, *inputs))
                    scores = _RowSampler(batch.rows, self._top_k).apply(torch.cat(logits))
                    for row, token in zip(batch.rows, scores.argmax(-1).tolist(), strict=True):
                        if not row.done:
                            row.step(token, self._eos)
                    batch.keep([not row.done for row in batch.rows])
                    if len(batch) and self._executor.urgent_waiting:
                        # An adapter load goes first; these rows carry on after it.
                        self._executor.requeue([row.job for row in batch.rows])
                        return
                    joining = self._executor.take_generations(
                        self._executor.max_batch_size - len(batch)
                    )
                    accepted += joining
                    if not len(batch) and not joining:
                        return
        except BaseException as exc:  # handed to every consumer still waiting, never lost
            for job in accepted:
                if job.row is None or not job.row.done:
                    job.post(_ERROR, exc)

    def _mixed_adapters(self, rows: list[_Row]) -> PeftModel:
        """PEFT set up for a batch whose rows use different adapters ("__base__": none)."""
        peft = self._peft
        assert peft is not None  # two different adapters mean at least one is loaded
        keys = self._adapter_keys(rows)
        for key in set(keys) - {_BASE_ROW}:
            if key not in peft.peft_config:
                raise RuntimeError(f"LoRA weights {key} are not loaded")  # a bug
        # PEFT only honours adapter_names while some adapter is active (not just a stale name).
        peft.set_adapter(next(key for key in keys if key != _BASE_ROW), inference_mode=True)
        return peft

    @staticmethod
    def _adapter_keys(rows: list[_Row]) -> list[str]:
        return [row.job.adapter.key if row.job.adapter else _BASE_ROW for row in rows]

    def _row(self, job: _Job) -> _Row:
        if job.row is None:  # its first batch (later ones resume a preempted row)
            prompt = self._encode(job.request.messages)
            prompt, limit = self._fit_context(prompt, job.request.max_tokens + _EXTRA_TOKENS)
            job.row = _Row(job, self._decode, prompt, limit)
            job.row.prefix = self._shared_start(job.request.messages, prompt)
        return job.row

    def _shared_start(self, messages: list[dict[str, str]], prompt: list[int]) -> tuple[int, ...]:
        """The tokens of every message but the last, when the prompt starts with them: the
        part a request shares with others (system prompt, few-shot example, history)."""
        if self._cache_argument is None or len(messages) < 2:
            return ()
        head = self._encode(messages[:-1], generation_prompt=False)
        if not MIN_PREFIX_TOKENS <= len(head) < len(prompt) or prompt[: len(head)] != head:
            return ()
        return tuple(head)

    def _prefix_kv(self, row: _Row, activate: _Activate) -> KV | None:
        if not row.prefix:
            return None
        adapter = row.job.adapter.key if row.job.adapter else None
        kv = self.prefixes.get(adapter, row.prefix)
        if kv is None:
            with activate(row.job.adapter):
                kv = compute_prefix(self._model, row.prefix)
            self.prefixes.put(adapter, row.prefix, kv)
        return kv

    def _generate_rows(self, rows: list[_Row]) -> bool:
        """Generate until every row is done, or an urgent job waits (then returns True)."""
        config = self._generation_config(max(row.remaining for row in rows))
        input_ids, attention_mask, cache = self._batch_inputs(rows)
        stepper = _Stepper(rows, self._eos, lambda: self._executor.urgent_waiting)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "generation_config": config,
            "logits_processor": LogitsProcessorList([_RowSampler(rows, self._top_k)]),
            "stopping_criteria": StoppingCriteriaList([stepper]),
        }
        if cache is not None and self._cache_argument:
            kwargs[self._cache_argument] = cache
        adapters = {row.job.adapter for row in rows}
        if len(adapters) == 1:
            with self._activated(next(iter(adapters))):
                self._model.generate(**kwargs)
            return stepper.preempted
        # A mixed batch: PEFT routes each row through its own adapter.
        peft = self._mixed_adapters(rows)
        cast(Any, peft).generate(adapter_names=self._adapter_keys(rows), **kwargs)  # untyped
        return stepper.preempted

    def _batch_inputs(
        self, rows: list[_Row], activate: _Activate | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None]:
        """Input ids and attention mask for ``rows``' contexts, and the cache holding their
        cached prompt starts if any has one (else left padding: each row ends in the last
        column).  A start not cached yet is computed under ``activate(adapter)``."""
        activate = activate or self._activated
        prefixed = [
            PrefixedRow(row.context, row.prefix, self._prefix_kv(row, activate)) for row in rows
        ]
        pad_id = self._pad_id
        if self._cache_argument and any(row.kv is not None for row in prefixed):
            return prefixed_batch(prefixed, pad_id, self._model.config, self.device)
        contexts = [row.context for row in rows]
        width = max(map(len, contexts))
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, context in enumerate(contexts):
            input_ids[i, width - len(context) :] = torch.tensor(context, dtype=torch.long)
            attention_mask[i, width - len(context) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device), None

    def _encode(
        self, messages: list[dict[str, str]], *, generation_prompt: bool = True
    ) -> list[int]:
        chat = [
            {"role": _ROLE_ALIASES.get(m["role"], m["role"]), "content": m["content"]}
            for m in messages
        ]
        with self._tokenizer_lock:
            if self._tokenizer.chat_template:
                prompt = self._tokenizer.apply_chat_template(
                    chat, tokenize=False, add_generation_prompt=generation_prompt
                )
                ids = self._tokenizer(prompt, add_special_tokens=False)["input_ids"]
            else:  # a base model without a template: a plain transcript
                prompt = "".join(f"{m['role']}: {m['content']}\n" for m in chat)
                prompt += "assistant:" if generation_prompt else ""
                ids = self._tokenizer(prompt)["input_ids"]
        return list(ids)

    def _fit_context(self, prompt: list[int], wanted: int) -> tuple[list[int], int]:
        """Cut the oldest prompt tokens if prompt + answer would not fit the context window.

        vLLM would answer 400 instead; for a chat bot, forgetting the start of a long
        conversation is the friendlier failure.
        """
        limit = self._max_context
        if not limit:
            return prompt, wanted
        reserve = min(wanted, limit // 2)
        if len(prompt) + reserve > limit:
            keep = limit - reserve
            logger.warning("Prompt of %d tokens cut to its last %d", len(prompt), keep)
            prompt = prompt[-keep:]
        return prompt, max(1, min(wanted, limit - len(prompt)))

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        # Greedy for generate(): _RowSampler does each row's sampling itself.
        config: GenerationConfig = copy.deepcopy(self._model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.num_return_sequences = 1
        config.do_sample = False
        config.temperature = None
        config.top_p = None
        config.top_k = None
        if config.pad_token_id is None:
            config.pad_token_id = self._pad_id
        return config

    @functools.cached_property
    def _pad_id(self) -> int:
        return _first_id(
            self._model.generation_config.pad_token_id,
            self._tokenizer.pad_token_id,
            self._tokenizer.eos_token_id,
            0,
        )

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


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _first_id(*candidates: int | list[int] | None) -> int:
    return next(ids[0] for ids in map(_ids, candidates) if ids)


def _log_failure(future: ConcurrentFuture[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("Freeing LoRA weights failed: %r", exc, exc_info=exc)
