"""The canary is judged on prompts no adapter trained on: each round's canary phase asks its
own slice of the shipped canary prompts, never the traffic prompts every adapter learned from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import bot.simulation.runner as runner
from bot.simulation.prompts import Prompt
from bot.simulation.runner import Simulation, SimulationOptions


def _simulation(tmp_path: Path, rounds: int = 3) -> Simulation:
    return Simulation(SimulationOptions(data_dir=tmp_path, rounds=rounds, seed=5))


def test_a_rounds_canary_prompts_are_its_own_and_each_is_asked_before_any_repeats(
    tmp_path: Path,
) -> None:
    simulation = _simulation(tmp_path)
    pool = simulation.prompts.canary_pool(2, 3)
    traffic = set(simulation.prompts.train)
    assert pool and traffic.isdisjoint(pool)
    asked = [p for _ in range(len(pool) // 7 + 2) for p in simulation._canary_prompts(2, 7)]
    assert set(asked) <= set(pool)
    assert Counter(asked[: len(pool)]) == Counter(pool)  # one whole pass first
    other_round = simulation._canary_prompts(3, 7)
    assert set(other_round).isdisjoint(pool)


class _Deployment:
    """What the canary phase reads from the database: ratings so far, then the verdict."""

    def __init__(self, verdict_after: int) -> None:
        self.checks = 0
        self.verdict_after = verdict_after

    async def run(self, fn: Any, /, **kwargs: Any) -> Any:
        if fn is runner._canary_ratings:
            return 4 * self.checks
        assert fn is runner._adapter_status, fn
        self.checks += 1
        return "active" if self.checks > self.verdict_after else "canary"


async def test_the_canary_phase_serves_the_rounds_canary_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulation = _simulation(tmp_path)
    simulation.db = _Deployment(verdict_after=3)  # type: ignore[assignment]
    asked: list[Prompt] = []

    async def serve(conversations: list[Any], prompts: list[Prompt]) -> list[Any]:
        assert len(prompts) == len(conversations)
        asked.extend(prompts)
        return []

    async def stored(_exchanges: list[Any], within: float = 120.0) -> None:
        return None

    monkeypatch.setattr(runner, "run_traffic", serve)
    monkeypatch.setattr(simulation, "_wait_stored", stored)
    people: list[Any] = [object()] * 4

    outcome = await simulation._canary_phase(people, "paraphrase-v1", 1)

    assert outcome == "promoted"
    assert asked and set(asked) <= set(simulation.prompts.canary_pool(1, 3))
    assert set(asked).isdisjoint(simulation.prompts.train)
