"""Training memory: small forward passes that add up to the batch, and memory handed back."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import Trainer

from tests.training.conftest import pair_rows, thumb_rows
from training.config import TrainConfig
from training.trainer import train_adapter, training_arguments

FAST = {"learning_rate": 5e-3, "epochs": 1, "batch_size": 8, "max_length": 96, "lora_r": 8}


@pytest.mark.parametrize(
    ("method", "batch", "micro", "expected"),
    [
        ("dpo", 8, 2, (2, 4)),
        ("dpo", 8, 3, (2, 4)),  # 3 does not divide 8: every step still sees exactly 8
        ("orpo", 6, 4, (3, 2)),
        ("dpo", 8, 16, (8, 1)),
        ("reward", 5, 2, (1, 5)),  # a prime batch: one example per pass
        ("kto", 8, 2, (4, 2)),  # KTO estimates its KL reference point within a pass
        ("kto", 2, 1, (2, 1)),
    ],
)
def test_a_batch_is_split_into_equal_forward_passes(
    method: str, batch: int, micro: int, expected: tuple[int, int], tmp_path: Path
) -> None:
    config = TrainConfig(method=method, batch_size=batch, micro_batch_size=micro)
    assert config.passes() == expected
    arguments = training_arguments(config, tmp_path)
    assert (
        arguments["per_device_train_batch_size"],
        arguments["gradient_accumulation_steps"],
    ) == expected


def test_batch_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(micro_batch_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(batch_size=0)


def _first_step(
    method: str, micro: int, tiny_model: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, float], list[int]]:
    """The logged metrics of the first optimiser step, and the examples of each forward pass."""
    passes: list[int] = []
    step = Trainer.training_step

    def recording_step(self: Trainer, model: object, inputs: dict, *args: object) -> object:
        passes.append(len(next(v for k, v in inputs.items() if k.endswith("input_ids"))))
        return step(self, model, inputs, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "training_step", recording_step)
    rows = thumb_rows(8) if method == "kto" else pair_rows(8)
    config = TrainConfig(method=method, micro_batch_size=micro, **FAST)
    outcome = train_adapter(config, rows, model_path=tiny_model, output_dir=out)
    monkeypatch.undo()
    assert outcome.steps == 1
    return next(h for h in outcome.history if "loss" in h), passes


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_small_passes_train_as_one_batch(
    method: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradients of the passes are averaged, not summed: the first step's loss and gradient
    norm equal those of the whole batch in one pass (a sum would show a 4x or 2x norm)."""
    whole, whole_passes = _first_step(method, 8, tiny_model, tmp_path / "whole", monkeypatch)
    split, split_passes = _first_step(method, 2, tiny_model, tmp_path / "split", monkeypatch)
    assert len(whole_passes) == 1
    assert len(split_passes) == (2 if method == "kto" else 4)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-3)
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-2)


@pytest.mark.skipif(not ctypes.util.find_library("c"), reason="needs a C library to trim")
def test_freed_tensors_are_handed_back_to_the_system() -> None:
    """glibc keeps the heap pages of freed mid-sized tensors (a training step's activations)
    until trimmed: without `release_memory` the process stays at its peak."""
    script = """
import torch
from training.resources import release_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

tensors = [torch.ones(64 * 1024) for _ in range(2000)]  # 256 KB each, ~500 MB
last = tensors[-1]
del tensors
freed = rss_mb()
release_memory()
print(freed, rss_mb())
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    freed, released = map(int, done.stdout.split()[-2:])
    assert freed - released > 300, (freed, released)
