"""Refuse a run that would not fit, instead of letting the machine swap."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from loopgram.errors import LoopgramError


class WouldNotFitError(LoopgramError):
    key = "error-training-too-big"


def available_memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


def model_weight_bytes(model_path: Path) -> int:
    """fp32 size of the weights (training runs in fp32 on CPU)."""
    files = list(model_path.glob("*.safetensors")) + list(model_path.glob("*.bin"))
    on_disk = sum(f.stat().st_size for f in files)
    config = json.loads((model_path / "config.json").read_text())
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return on_disk * (2 if ("16" in dtype) else 1)


def estimate_peak_bytes(
    model_path: Path,
    *,
    batch_size: int,
    max_length: int,
    pairs: bool = True,
    reference: bool = True,
    vocab_logits: bool = True,
) -> int:
    """Weights ~3x (weights, LoRA optimiser state, reference pass, allocator slack; measured
    2.2-2.9x for SmolLM2-135M and Qwen-0.5B) plus activations of chosen and rejected for
    `batch_size` pairs: the examples of one forward pass (`TrainConfig.passes`).

    On SmolLM2-135M with ~440-token pairs a DPO run peaked at 12.4, 7.4 and 4.4 GB with
    passes of 8, 4 and 2 pairs: ~1.5 MB per token of a pass over a fixed ~1.6 GB, which the
    terms below give (the hidden-state term was 40 per layer and unit before that measurement,
    an estimate 25 % short).

    `reference=False` (ORPO) drops the reference pass's logits: on SmolLM2-135M at 256 tokens
    per sequence ORPO peaked 0.3 MB per token lower than DPO (1.8 against 2.1 MB), the
    share the vocab term below gives up."""
    config = json.loads((model_path / "config.json").read_text())
    hidden = int(config.get("hidden_size", 1024))
    layers = int(config.get("num_hidden_layers", 24))
    vocab = int(config.get("vocab_size", 50_000))
    sequences = batch_size * (2 if pairs else 1)
    # A reward model reads one score off the last hidden state: no vocabulary-wide logits.
    logits = 0 if not vocab_logits else vocab * (8 if reference else 5)
    activations = sequences * max_length * (hidden * layers * 62 + logits)
    return 3 * model_weight_bytes(model_path) + activations


def check_fits(
    model_path: Path,
    *,
    batch_size: int,
    max_length: int,
    budget_gb: float,
    reference: bool = True,
    vocab_logits: bool = True,
) -> int:
    need = estimate_peak_bytes(
        model_path,
        batch_size=batch_size,
        max_length=max_length,
        reference=reference,
        vocab_logits=vocab_logits,
    )
    budget = int(budget_gb * 1024**3) if budget_gb > 0 else int(available_memory_bytes() * 0.75)
    if need > budget:
        raise WouldNotFitError(
            f"training would need about {need / 1024**3:.1f} GiB, the budget is "
            f"{budget / 1024**3:.1f} GiB: lower micro_batch_size/max_length or use a smaller model"
        )
    return need


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


P = ParamSpec("P")
R = TypeVar("R")


def release_memory() -> None:
    """Hand the memory of finished work back to the system.

    A training run's activations are freed tensors in glibc's heap afterwards, and glibc keeps
    them: a training worker went on holding 7 GB of its 10.9 GB peak while idle after a run,
    and the next process on the machine ran out. `malloc_trim` returns the free pages."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


def releases_memory(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, followed by `release_memory` once its locals (a trainer, a model) are gone."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            release_memory()

    return wrapper
