"""The canary is judged on prompts no adapter trained on: each round's canary phase asks its
own slice of the shipped canary prompts, never the traffic prompts every adapter learned from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bot.simulation.runner as runner
from bot.simulation.options import SimulationOptions
from bot.simulation.prompts import Prompt
from bot.simulation.runner import Simulation
from loopgram.routing import in_canary


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

    def __init__(self, verdict_after: int, ratings_per_check: int = 4) -> None:
        self.checks = 0
        self.verdict_after = verdict_after
        self.ratings_per_check = ratings_per_check

    async def run(self, fn: Any, /, **kwargs: Any) -> Any:
        if fn is runner._canary_ratings:
            return self.ratings_per_check * self.checks
        assert fn is runner._adapter_status, fn
        self.checks += 1
        return "active" if self.checks > self.verdict_after else "canary"


def _people(on_canary: int, off_canary: int, name: str = "paraphrase-v1") -> list[Any]:
    """Conversations of people the routing hash puts on (and off) the canary `name`."""
    share = SimulationOptions(data_dir=Path()).canary_share
    on = [i for i in range(1, 10_000) if in_canary(i, name, share)][:on_canary]
    off = [i for i in range(1, 10_000) if not in_canary(i, name, share)][:off_canary]
    return [SimpleNamespace(person=SimpleNamespace(user_id=i)) for i in on + off]


def _serve_into(asked: list[Prompt]) -> Any:
    async def serve(conversations: list[Any], prompts: list[Prompt]) -> list[Any]:
        assert len(prompts) == len(conversations)
        asked.extend(prompts)
        return []

    return serve


async def _stored(_exchanges: list[Any], within: float = 120.0) -> None:
    return None


async def test_the_canary_phase_serves_the_rounds_canary_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulation = _simulation(tmp_path)
    simulation.db = _Deployment(verdict_after=3)  # type: ignore[assignment]
    asked: list[Prompt] = []
    monkeypatch.setattr(runner, "run_traffic", _serve_into(asked))
    monkeypatch.setattr(simulation, "_wait_stored", _stored)

    outcome = await simulation._canary_phase(_people(1, 3), "paraphrase-v1", 1)

    assert outcome == "promoted"
    assert asked and set(asked) <= set(simulation.prompts.canary_pool(1, 3))
    assert set(asked).isdisjoint(simulation.prompts.train)


async def test_the_canary_phase_lasts_until_the_cap_can_be_reached_by_the_people_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cap of 80 first answers and 2 of 8 people on the canary: 40 batches would reach it,
    and the phase allows twice that before it gives up; with nobody on it, it stops at once."""
    simulation = Simulation(
        SimulationOptions(data_dir=tmp_path, canary_min_ratings=20, canary_max_ratings=80)
    )
    # No look is reached (no ratings stored), so the phase never waits for the beat.
    simulation.db = _Deployment(verdict_after=10_000, ratings_per_check=0)  # type: ignore[assignment]
    asked: list[Prompt] = []
    monkeypatch.setattr(runner, "run_traffic", _serve_into(asked))
    monkeypatch.setattr(simulation, "_wait_stored", _stored)

    assert await simulation._canary_phase(_people(2, 6), "paraphrase-v1", 1) == "undecided"
    assert len(asked) == 80 * 8

    asked.clear()
    assert await simulation._canary_phase(_people(0, 8), "paraphrase-v1", 1) == "undecided"
    assert asked == []


def test_a_canary_verdict_reports_the_live_ratings_it_cost(sqlite_db: Any) -> None:
    """The look a verdict was made at is what it cost in live ratings; a canary not judged
    yet cost none. Both read back as the beat stored them."""
    from bot.simulation.runner import _canary_look, _canary_verdict
    from loopgram import adapters

    judged = {
        "decision": "rollback",
        "difference": -0.08,
        "low": -0.22,
        "high": 0.06,
        "reason": "no evidence of non-inferiority by the rating cap",
        "look": 160,
        "people": 10,
    }
    with sqlite_db.session() as session:
        for metrics in ({"canary": judged}, {}):
            adapters.register(
                session=session,
                assistant="paraphrase",
                path="/adapters/x",
                base_model="base",
                method="dpo",
                metrics=metrics,
            )
        session.commit()
    assert sqlite_db.call(_canary_look, name="paraphrase-v1") == 160
    assert sqlite_db.call(_canary_look, name="paraphrase-v2") == 0
    assert sqlite_db.call(_canary_verdict, name="paraphrase-v1") == (
        "live -0.08 (-0.22…+0.06) on 160 rated answers from 10 people: "
        "no evidence of non-inferiority by the rating cap"
    )
    assert sqlite_db.call(_canary_verdict, name="paraphrase-v2") == ""
