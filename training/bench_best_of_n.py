"""``best_of_n_latency`` for ``loopgram bench``: what best-of-n costs a person in waiting.

The value is the median seconds of one best-of-n answer exactly as the bot gets it
(``loopgram.best_of_n.BestOfN.run``: n candidates in one request to the built-in server, which
batches them, then ``/v1/rewards`` with a reward model on the same base), the baseline the
median seconds of one ordinary answer (``LLMClient.complete``, streamed as the bot streams
it), requests interleaved so that machine load hits both alike. The reward model is an
untrained LoRA sequence-classification adapter: its scores mean nothing, its cost is real.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

__all__ = ["BEST_OF_N", "make_reward_adapter", "measure_best_of_n"]

BEST_OF_N = 4
"""Candidates per best-of-n answer in the figure."""


def make_reward_adapter(model_path: Path, folder: Path, *, r: int = 8) -> Path:
    """An untrained reward model (LoRA SEQ_CLS + head) saved as training.reward saves one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.reward import META_FILE, load_classifier

    torch.manual_seed(0)
    model = load_classifier(model_path)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="SEQ_CLS")
    peft = get_peft_model(model, config)
    folder.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(str(folder))
    meta = {"max_length": 256, "base_model": str(model_path), "method": "reward"}
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return folder


async def measure_best_of_n(
    model_path: Path,
    work: Path,
    *,
    requests: int,
    max_tokens: int,
    deadline_s: float,
    n: int = BEST_OF_N,
) -> dict[str, Any]:
    """``{"best_s", "single_s", "generate_s", "score_s", "n", "requests"}`` (medians)."""
    from loopgram.best_of_n import BestOfN, BestOfNPlan
    from loopgram.llm import LLMClient
    from loopgram.reward_client import RewardClient, RewardModelRef
    from loopgram.settings import LLMSettings, RewardSettings
    from training.bench import PROMPTS
    from training.model_server.app import create_app, make_backend, start_server

    adapter = await asyncio.to_thread(make_reward_adapter, model_path, work / "bench-rm")
    backend = await asyncio.to_thread(make_backend, str(model_path), "loopgram-base")
    end = time.monotonic() + deadline_s
    try:
        runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
        llm = LLMClient(
            LLMSettings(
                llm_base_url=url,
                llm_model="loopgram-base",
                llm_temperature=0.7,
                llm_timeout=600,
                llm_first_token_timeout=600,
            )
        )
        best_of_n = BestOfN(
            settings=RewardSettings(best_of_n={"*": n}),
            llm=llm,
            rewards=RewardClient(url, timeout=600),
        )
        plan = BestOfNPlan(n, RewardModelRef("bench-rm", str(adapter), str(model_path)))

        def messages(i: int) -> list[dict[str, str]]:
            return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]

        async def single(i: int) -> float:
            started = time.perf_counter()
            await llm.complete(messages(i), max_tokens=max_tokens)
            return time.perf_counter() - started

        async def best(i: int) -> tuple[float, float, float]:
            started = time.perf_counter()
            result = await best_of_n.run(
                plan,
                messages=messages(i),
                model="loopgram-base",
                max_tokens=max_tokens,
                assistant="bench",
            )
            if not result.scored:
                raise RuntimeError("best_of_n_latency: the reward model did not score")
            seconds = time.perf_counter() - started
            return seconds, result.generate_seconds, result.score_seconds

        try:
            await single(0)  # untimed: first-call costs, and the reward model's load
            await best(0)
            singles: list[float] = []
            bests: list[tuple[float, float, float]] = []
            for i in range(requests):
                if i and time.monotonic() > end:
                    break
                singles.append(await single(i))
                bests.append(await best(i))
        finally:
            await llm.close()
            await runner.cleanup()
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
        from training.reward import clear_cache

        clear_cache()  # the scorer's copy of the model: not kept through the training figures
    return {
        "best_s": statistics.median(b[0] for b in bests),
        "single_s": statistics.median(singles),
        "generate_s": statistics.median(b[1] for b in bests),
        "score_s": statistics.median(b[2] for b in bests),
        "n": n,
        "requests": len(singles),
    }
