"""Paired held-out measurements: every version answers item k with the same seed (and a
best-of-n request's candidate i with seed + i), so two versions' outcomes pair item by item;
the summary, JSON and report carry the paired differences, and estimates measured with
different seeds (or unseeded) are never paired."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.simulation.heldout import SEED_STRIDE, RateEstimate, heldout_rate
from bot.simulation.options import SimulationOptions
from bot.simulation.prompts import Prompt
from bot.simulation.report import write_report
from bot.simulation.results import RoundResult, SimulationResult
from bot.simulation.runner import _measurement_key
from loopgram.llm import LLMClient
from loopgram.settings import Settings
from tests.model_server.test_best_of_n_server import FakeRewards
from tests.simulation.test_heldout_best_of_n import GOOD, LONG, SOURCE, measure_best_of_3
from training.model_server.app import create_app, start_server
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend

PROMPTS = [Prompt("paraphrase", "en", SOURCE), Prompt("paraphrase", "en", SOURCE + " Really.")]
ADAPTER = "paraphrase-v1"


def _reply(request: GenerationRequest) -> str:
    """The base model is liked on items 1 and 2 of every 3; the adapter also on every 6th."""
    item = (request.seed or 0) // SEED_STRIDE
    liked = item % 3 != 0 or (request.model == ADAPTER and item % 6 == 0)
    return GOOD if liked else LONG


@pytest.fixture
async def served() -> AsyncIterator[tuple[ScriptedBackend, str]]:
    backend = ScriptedBackend(_reply, model_ids=("loopgram-base", ADAPTER))
    runner, url = await start_server(create_app(backend, rewards=FakeRewards()), "127.0.0.1", 0)
    yield backend, url
    await runner.cleanup()


async def _rate(settings: Settings, model: str, seed: int | None, **kw: object) -> RateEstimate:
    llm = LLMClient(settings.llm)
    try:
        return await heldout_rate(
            llm,
            PROMPTS,
            models={"paraphrase": model},
            samples_per_prompt=6,
            concurrency=4,
            max_tokens=64,
            seed=seed,
            **kw,  # type: ignore[arg-type]
        )
    finally:
        await llm.close()


async def test_every_version_answers_item_k_with_the_same_seed(
    served: tuple[ScriptedBackend, str],
    settings_factory,  # type: ignore[no-untyped-def]
) -> None:
    backend, url = served
    settings = settings_factory(LLM_BASE_URL=url)
    base = await _rate(settings, "loopgram-base", 0)
    tuned = await _rate(settings, ADAPTER, 0)
    seeds = sorted(r.seed for r in backend.requests if r.seed is not None)
    assert seeds == sorted([k * SEED_STRIDE for k in range(12)] * 2)
    # Items in order: the base model misses items 0, 3, 6, 9; the adapter fixes 0 and 6.
    assert base.outcomes == tuple(k % 3 != 0 for k in range(12))
    assert tuned.outcomes == tuple(k % 3 != 0 or k % 6 == 0 for k in range(12))
    assert (base.liked, tuned.liked, base.seed, tuned.seed) == (8, 10, 0, 0)
    # What the people said of each answer, and how long the answers were (12 and 23 words).
    assert base.verdicts == (("concise", 8), ("longer than the original", 4))
    assert tuned.verdicts == (("concise", 10), ("longer than the original", 2))
    assert base.mean_words == pytest.approx((8 * 12 + 4 * 23) / 12)
    result = SimulationResult(
        base, [RoundResult(1, tuned, ADAPTER, True)], None, "skipped", _options(), 1.0
    )
    gain = result.paired(tuned, base)
    assert gain is not None
    assert (gain.difference, gain.a_only, gain.b_only) == (pytest.approx(2 / 12), 2, 0)
    assert gain.low < gain.difference < gain.high


async def test_an_unseeded_measurement_sends_no_seed_and_never_pairs(
    served: tuple[ScriptedBackend, str],
    settings_factory,  # type: ignore[no-untyped-def]
) -> None:
    backend, url = served
    settings = settings_factory(LLM_BASE_URL=url)
    unseeded = await _rate(settings, "loopgram-base", None)
    assert backend.requests and all(r.seed is None for r in backend.requests)
    seeded = await _rate(settings, "loopgram-base", 0)
    other_seed = await _rate(settings, "loopgram-base", 5)
    result = SimulationResult(seeded, [], None, "skipped", _options(), 1.0)
    assert result.paired(unseeded, seeded) is None
    assert result.paired(other_seed, seeded) is None
    assert result.paired(seeded, seeded) is not None


async def test_best_of_n_candidates_are_seeded_per_item(
    served: tuple[ScriptedBackend, str],
    settings_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backend, url = served
    settings = settings_factory(LLM_BASE_URL=url, BEST_OF_N="3")
    estimate = await measure_best_of_3(settings, tmp_path, seed=80)
    # Item k's candidate i: seed 80 + 8k + i; no two candidates share a seed.
    assert sorted(r.seed for r in backend.requests) == [80, 81, 82, 88, 89, 90]
    assert len(estimate.policy_outcomes) == len(estimate.outcomes) == 2


def _options() -> SimulationOptions:
    return SimulationOptions(data_dir=Path("unused"), rounds=1)


def _estimate(outcomes: list[bool], model: str, seed: int | None = 0) -> RateEstimate:
    return RateEstimate(sum(outcomes), len(outcomes), model, outcomes=tuple(outcomes), seed=seed)


def test_summary_json_and_report_carry_the_paired_differences(tmp_path: Path) -> None:
    base = [k % 4 == 0 for k in range(40)]  # 10 of 40 liked
    tuned = [k % 4 != 3 for k in range(40)]  # 30 of 40, a superset of the base's
    control = [k % 4 == 0 or k == 1 for k in range(40)]  # 11 of 40
    result = SimulationResult(
        _estimate(base, "loopgram-base"),
        [RoundResult(1, _estimate(tuned, ADAPTER), ADAPTER, True)],
        _estimate(control, "paraphrase-shuffled-control"),
        "",
        _options(),
        3.0,
    )
    summary = result.summary()
    assert summary.startswith("👍 rate 0.25 → 0.75 after 1 round (shuffled control 0.28); paired:")
    assert "vs base +0.50 [+" in summary and "control vs base +0.03 [-" in summary
    paths = write_report(result, tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    gain = data["rounds"][0]["vs_baseline"]
    assert (gain["difference"], gain["a_only"], gain["b_only"]) == (0.5, 20, 0)
    assert gain["ci_low"] > 0.3  # 20 discordant pairs, all one way
    drift = data["shuffled_control"]["vs_baseline"]
    assert drift["ci_low"] < 0 < drift["ci_high"]
    assert data["final_vs_control"]["difference"] == pytest.approx(0.475, abs=1e-4)
    assert data["settings"]["paired_seed"] == 0
    markdown = paths["markdown"].read_text("utf-8")
    assert "vs base, paired (95% CI)" in markdown and "+0.50 (+" in markdown


def test_estimates_without_outcomes_keep_the_plain_summary(tmp_path: Path) -> None:
    result = SimulationResult(
        RateEstimate(12, 48, "loopgram-base"),
        [RoundResult(1, RateEstimate(20, 48, ADAPTER), ADAPTER, True)],
        RateEstimate(13, 48, "control"),
        "",
        _options(),
        1.0,
    )
    assert result.summary() == "👍 rate 0.25 → 0.42 after 1 round (shuffled control 0.27)"
    assert result.as_dict()["rounds"][0]["vs_baseline"] == {}


def test_a_best_of_n_round_also_pairs_its_first_candidates_with_the_base() -> None:
    base = [k % 4 == 0 for k in range(20)]  # 5 of 20
    picked = [k % 2 == 0 for k in range(20)]  # 10 of 20, a superset of the base's
    first = [k % 4 == 0 or k == 1 for k in range(20)]  # 6 of 20
    served = RateEstimate(
        10, 20, ADAPTER, best_of_n=20, policy_liked=6,
        outcomes=tuple(picked), policy_outcomes=tuple(first), seed=0,
    )  # fmt: skip
    result = SimulationResult(
        _estimate(base, "loopgram-base"), [RoundResult(1, served, ADAPTER, True)], None, "",
        _options(), 1.0,
    )  # fmt: skip
    point = result.as_dict()["rounds"][0]
    assert (point["vs_baseline"]["a_only"], point["vs_baseline"]["b_only"]) == (5, 0)
    policy = point["policy_vs_baseline"]
    assert (policy["difference"], policy["a_only"], policy["b_only"]) == (0.05, 1, 0)


async def test_a_round_serving_what_was_measured_before_keeps_that_estimate(
    served: tuple[ScriptedBackend, str], settings_factory: Any, tmp_path: Path
) -> None:
    """A rejected candidate or a rolled-back canary leaves the bot serving a model that was
    already measured on the same seeded items: its estimate stands and no answer is generated
    again. Another model, or another reward model picking best-of-n, is measured anew."""
    from bot.simulation.heldout import BestOfNMeasure
    from bot.simulation.runner import Simulation
    from loopgram.best_of_n import BestOfNPlan
    from loopgram.reward_client import RewardModelRef

    backend, url = served
    settings = settings_factory(LLM_BASE_URL=url)
    simulation = Simulation(SimulationOptions(data_dir=tmp_path, eval_samples=1))
    items = len(simulation.prompts.heldout)
    llm = LLMClient(settings.llm)
    try:
        base = await simulation._measure(llm, {"paraphrase": "loopgram-base"}, None)
        assert len(backend.requests) == items
        again = await simulation._measure(llm, {"paraphrase": "loopgram-base"}, None)
        assert again is base and len(backend.requests) == items
        adapter = await simulation._measure(llm, {"paraphrase": ADAPTER}, None)
        assert adapter is not base and len(backend.requests) == 2 * items
    finally:
        await llm.close()

    def picking(reward_model: str) -> BestOfNMeasure:
        plan = BestOfNPlan(2, RewardModelRef(reward_model, f"/rm/{reward_model}"))
        return BestOfNMeasure(service=object(), plans={"paraphrase": plan})  # type: ignore[arg-type]

    single = _measurement_key({"paraphrase": ADAPTER}, None)
    rm_v1 = _measurement_key({"paraphrase": ADAPTER}, picking("paraphrase-rm-v1"))
    rm_v2 = _measurement_key({"paraphrase": ADAPTER}, picking("paraphrase-rm-v2"))
    assert len({single, rm_v1, rm_v2}) == 3
    assert rm_v1 == _measurement_key({"paraphrase": ADAPTER}, picking("paraphrase-rm-v1"))
