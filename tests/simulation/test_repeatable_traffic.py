"""A simulation's traffic repeats for a seed: the built-in server seeds each answer by its
content and asker (BUILTIN_MODEL_SEED = the simulation's seed), so two fresh deployments
serving the same people the same prompts give the same answers and the same presses, however
the concurrent requests interleave. The n-gram model samples for real and answers fast."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.emulated import emulated_bot
from bot.simulation.options import SimulationOptions
from bot.simulation.runner import Simulation, _prepare_data_dir, environment, simulation_env
from bot.simulation.traffic import run_traffic
from loopgram.settings import Settings
from training.model_server.app import NGRAM_BASE_MODEL

pytestmark = pytest.mark.slow  # three fresh deployments, about a minute

Seen = list[tuple[int, str, str, bool, str, str | None]]


async def _traffic(data_dir: Path, seed: int) -> Seen:
    options = SimulationOptions(data_dir=data_dir, people=4, traffic=12, max_tokens=24, seed=seed)
    simulation = Simulation(options)
    await asyncio.to_thread(_prepare_data_dir, data_dir)
    with environment(simulation_env(options)):
        async with emulated_bot(Settings.load()) as env:
            exchanges = await run_traffic(
                simulation._people(env.emulator),
                simulation._traffic_prompts(simulation.traffic_per_round),
            )
    assert exchanges and not any(e.failed for e in exchanges)
    return sorted(
        (e.user_id, e.prompt.text, e.answer, e.judgement.liked, str(e.action), e.second)
        for e in exchanges
    )


async def test_the_same_seed_serves_the_same_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE_MODEL_PATH", NGRAM_BASE_MODEL)
    first = await _traffic(tmp_path / "first", seed=3)
    again = await _traffic(tmp_path / "again", seed=3)
    other = await _traffic(tmp_path / "other", seed=4)
    assert first == again
    # Another seed: other prompts for the people and other draws from the model.
    assert {answer for *_, answer, _, _, _ in other} != {answer for *_, answer, _, _, _ in first}
