"""Reward models served next to the generating model: ``/v1/load_reward_model`` and
``/v1/rewards`` (loopgram's own endpoints; vLLM has none for LoRA reward heads).

The bot scores best-of-n candidates over HTTP, so it never loads torch itself. A reward model
is a LoRA sequence-classification adapter (``training.reward``) on the base model it was
trained on. :class:`ScorerRewardModels` keeps one :class:`~training.reward.RewardScorer` per
base model (through ``training.reward.scorer_for``): the base is the one the request names,
else the one recorded beside the adapter, else the server's own. Loading and scoring run in
one worker thread of their own, so the event loop keeps streaming answers meanwhile.

``create_app`` takes any :class:`RewardModels`; tests pass a fake one to pick a known answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "RewardModelError",
    "RewardModels",
    "RewardsUnavailableError",
    "ScorerRewardModels",
    "UnknownRewardModelError",
]

log = logging.getLogger(__name__)

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_META_FILE = "loopgram_reward.json"  # training.reward.META_FILE, read without importing torch


class RewardModelError(Exception):
    """A reward model could not be loaded (HTTP 400; 404 when its folder is missing)."""

    status = 400


class UnknownRewardModelError(LookupError):
    """Scoring with a reward model that is not loaded (HTTP 404: the client loads it)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The reward model `{name}` does not exist.")
        self.name = name


class RewardsUnavailableError(RuntimeError):
    """This server cannot score at all (no torch/transformers/peft): HTTP 503."""


class RewardModels(Protocol):
    """What the server needs from a reward-model host."""

    def names(self) -> list[str]:
        """The reward models loaded now."""
        ...

    async def load(self, name: str, path: str, base_model: str | None = None) -> None:
        """Load the reward model saved in ``path`` as ``name`` (a no-op when it is loaded
        from the same path already)."""
        ...

    async def score(
        self, name: str, messages: Sequence[dict[str, str]], answers: Sequence[str]
    ) -> list[float]:
        """One finite float per answer to the prompt ``messages``, in order."""
        ...

    def close(self) -> None: ...


def _adapter_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file() or not any(
        (folder / weights).is_file() for weights in _ADAPTER_WEIGHTS
    ):
        error = RewardModelError(f"No reward model (LoRA adapter) found at {path}")
        error.status = 404
        raise error
    return folder


def _recorded_base(folder: Path) -> Path | None:
    """The base model written beside the adapter at training time, if it is on this disk."""
    recorded = ((_META_FILE, "base_model"), ("adapter_config.json", "base_model_name_or_path"))
    for name, key in recorded:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value and Path(value).is_dir():
            return Path(value)
    return None


class ScorerRewardModels:
    """Reward models on CPU scorers (``training.reward``), loaded lazily by name."""

    def __init__(self, base_model: Path | None = None) -> None:
        self.base_model = base_model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopgram-rewards")
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[str, Any]] = {}  # name -> (folder, RewardScorer)

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, (_, scorer) in self._loaded.items() if name in scorer.adapters]

    async def load(self, name: str, path: str, base_model: str | None = None) -> None:
        folder = _adapter_folder(path)  # a few stat calls: a wrong path fails at once
        loop = asyncio.get_running_loop()
        # Done in the thread, bookkeeping included: a client that gives up waiting does not
        # undo a load that then completes (the next request finds it loaded).
        await loop.run_in_executor(self._executor, self._load_sync, name, folder, base_model)

    def _load_sync(self, name: str, folder: Path, base_model: str | None) -> None:
        base = Path(base_model) if base_model and Path(base_model).is_dir() else None
        base = base or _recorded_base(folder) or self.base_model
        if base is None:
            raise RewardModelError(
                f"No base model is known for reward model '{name}': pass 'base_model'."
            )
        try:
            from training.reward import scorer_for
        except ImportError as exc:  # pragma: no cover - the ml extra is missing
            raise RewardsUnavailableError(f"Scoring needs the ml extra: {exc}") from exc
        with self._lock:
            known = self._loaded.get(name)
        if known is not None and known[0] != str(folder) and name in known[1].adapters:
            raise RewardModelError(
                f"The reward model '{name}' is already loaded from {known[0]}; "
                "reward model names are never reused."
            )
        try:
            scorer = scorer_for(base)
            scorer.add(name, folder)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise RewardModelError(f"Loading reward model {name} failed: {exc}") from exc
        with self._lock:
            self._loaded[name] = (str(folder), scorer)

    async def score(
        self, name: str, messages: Sequence[dict[str, str]], answers: Sequence[str]
    ) -> list[float]:
        with self._lock:
            known = self._loaded.get(name)
        if known is None:
            raise UnknownRewardModelError(name)
        scorer = known[1]
        items = [(list(messages), answer) for answer in answers]
        loop = asyncio.get_running_loop()
        try:
            scores: list[float] = await loop.run_in_executor(
                self._executor, scorer.score, name, items
            )
        except KeyError as exc:  # evicted from its scorer (more than max_adapters loaded)
            with self._lock:
                self._loaded.pop(name, None)
            raise UnknownRewardModelError(name) from exc
        if not all(math.isfinite(score) for score in scores):
            raise RuntimeError(f"reward model {name} produced a non-finite score")
        return scores

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
