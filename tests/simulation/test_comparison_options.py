"""`loopgram simulate` comparisons: --method, --best-of-n and --reward-pairs parsed and
checked (one clear line on a bad value), passed to the simulated deployment, and the
report's new fields (what was compared, the time it cost) next to the CLI contract."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.simulation.command import build_options
from bot.simulation.heldout import RateEstimate
from bot.simulation.options import SimulationOptions
from bot.simulation.report import render_markdown, write_report
from bot.simulation.results import (
    DiscardedCandidate,
    RoundResult,
    SimulationResult,
    TrainingSnapshot,
    percentile,
)
from bot.simulation.runner import simulation_env
from loopgram.cli import app
from loopgram.settings import RewardSettings
from training.config import TrainConfig

RAW: dict[str, Any] = {
    "rounds": 2,
    "people": 4,
    "assistants": "paraphrase",
    "languages": "en",
    "passes": 1,
    "traffic": 0,
    "eval_samples": 1,
    "max_tokens": 16,
    "noise": 0.1,
    "seed": 0,
    "control": True,
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--best-of-n", "0"], "--best-of-n must be 1 (off) to 8 candidates, not 0"),
        (["--best-of-n", "9"], "--best-of-n must be 1 (off) to 8 candidates, not 9"),
        (["--method", "reward"], "must be one of dpo, orpo, kto, not 'reward'"),
        (["--method", "ppo"], "must be one of dpo, orpo, kto, not 'ppo'"),
        (["--reward-pairs"], "--reward-pairs needs --best-of-n 2 or more"),
        (["--reward-pairs", "--best-of-n", "1"], "--reward-pairs needs --best-of-n 2 or more"),
    ],
)
def test_bad_comparison_options_fail_with_one_clear_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_best_of_n_that_is_not_a_number_is_refused() -> None:
    result = CliRunner().invoke(app, ["simulate", "--best-of-n", "four"])
    assert result.exit_code == 2
    assert "best-of-n" in result.output and "Traceback" not in result.output


def test_a_method_from_the_train_config_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: reward\n", "utf-8")
    result = CliRunner().invoke(app, ["simulate", "--train-config", str(path)])
    assert result.exit_code == 2
    assert "method: in --train-config) must be one of dpo, orpo, kto" in result.output


def test_the_options_reach_the_training_config_and_the_deployment(tmp_path: Path) -> None:
    options = build_options(**RAW, data_dir=tmp_path, method="ORPO", best_of_n=4, reward_pairs=True)
    assert (options.method, options.best_of_n, options.reward_pairs) == ("orpo", 4, True)
    assert options.trains_reward_model
    # What the training worker reads from TRAIN_CONFIG is a valid TrainConfig.
    config = TrainConfig(**options.train)
    assert (config.method, config.reward_pairs) == ("orpo", True)
    assert options.train["max_length"] == 448  # the simulation's own options stay
    env = simulation_env(options)
    assert RewardSettings(best_of_n=env["BEST_OF_N"]).candidates_for("paraphrase") == 4
    assert env["REWARD_TRAIN_MIN_PAIRS"] == "0"  # the rounds train the reward model
    off = build_options(**RAW, data_dir=tmp_path)
    assert (off.method, off.best_of_n, off.reward_pairs) == ("dpo", 1, False)
    assert not off.trains_reward_model
    assert RewardSettings(best_of_n=simulation_env(off)["BEST_OF_N"]).candidates_for("x") == 1


def test_the_canary_cap_reaches_the_deployment_and_the_report_settings(tmp_path: Path) -> None:
    options = build_options(**RAW, data_dir=tmp_path, canary_ratings=160)
    env = simulation_env(options)
    assert (env["CANARY_MIN_RATINGS"], env["CANARY_MAX_RATINGS"]) == ("20", "160")
    assert build_options(**RAW, data_dir=tmp_path).canary_max_ratings == 80  # the default
    with pytest.raises(ValueError, match="--canary-ratings must be at least 20"):
        dataclasses.replace(options, canary_max_ratings=19)


@pytest.mark.parametrize("value", ["19", "many"])
def test_a_canary_cap_below_the_first_judgement_is_refused(value: str) -> None:
    result = CliRunner().invoke(app, ["simulate", "--canary-ratings", value])
    assert result.exit_code == 2
    assert "Invalid value for '--canary-ratings'" in result.output
    assert "Traceback" not in result.output


def test_method_goes_over_the_train_config_and_best_of_n_alone_trains_a_reward_model(
    tmp_path: Path,
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: kto\nepochs: 1\n", "utf-8")
    from_yaml = build_options(**RAW, data_dir=tmp_path, train_config=path)
    assert from_yaml.method == "kto" and from_yaml.train["epochs"] == 1
    overridden = build_options(**RAW, data_dir=tmp_path, train_config=path, method="dpo")
    assert overridden.method == "dpo" and overridden.train["epochs"] == 1
    best = build_options(**RAW, data_dir=tmp_path, best_of_n=2)
    assert best.trains_reward_model and not best.reward_pairs


def _compared(tmp_path: Path) -> SimulationResult:
    options = dataclasses.replace(
        SimulationOptions(data_dir=tmp_path / "data", rounds=2),
        best_of_n=4,
        train={**SimulationOptions(data_dir=tmp_path).train, "method": "orpo"},
    )
    rounds = [
        RoundResult(
            1,
            RateEstimate(20, 48, "paraphrase-v1"),
            "paraphrase-v1",
            True,
            candidate="paraphrase-v1",
            run_status="succeeded",
            canary="promoted",
            canary_live="live +0.12 (+0.01…+0.23) on 40 ratings: not worse by more than 0.10",
            canary_seconds=95.0,
            canary_ratings=40,
            train_seconds=300.0,
            policy_run_seconds=340.0,
            reward_run_status="succeeded",
            reward_model="paraphrase-rm-v1",
            reward_accuracy=0.71,
            reward_train_seconds=120.0,
            reward_run_seconds=150.0,
            answer_seconds=[2.0, 4.0, 3.0, 10.0],
        ),
        RoundResult(
            2,
            RateEstimate(30, 48, "paraphrase-v1", best_of_n=46, unscored=2, policy_liked=24),
            "paraphrase-v1",
            False,
            candidate="paraphrase-v2",
            run_status="rejected",
            train_seconds=310.0,
            reward_run_status="rejected",
            reward_model="paraphrase-rm-v1",
            reward_train_seconds=125.0,
            answer_seconds=[8.0, 9.0, 12.0],
            traffic_best_of_n=3,
            traffic_unscored=1,
        ),
    ]
    return SimulationResult(
        baseline=RateEstimate(12, 48, "loopgram-base"),
        rounds=rounds,
        shuffled_control=RateEstimate(13, 48, "paraphrase-shuffled-control"),
        control_detail="",
        options=options,
        seconds=900.0,
    )


def test_the_report_shows_what_was_compared_and_its_cost_in_time(tmp_path: Path) -> None:
    paths = write_report(_compared(tmp_path), tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    # The CLI contract stays.
    for point in data["rounds"]:
        assert {"round", "thumbs_up_rate", "ci_low", "ci_high", "adapter", "deployed"} <= set(point)
    assert {"thumbs_up_rate", "ci_low", "ci_high"} <= set(data["baseline"])
    assert data["shuffled_control"]["thumbs_up_rate"] == pytest.approx(13 / 48, abs=1e-4)
    assert data["summary"] == "👍 rate 0.25 → 0.62 after 2 rounds (shuffled control 0.27)"
    # What was compared.
    settings = data["settings"]
    assert (settings["method"], settings["best_of_n"], settings["reward_pairs"]) == (
        "orpo",
        4,
        False,
    )
    assert settings["heldout_measures"].startswith("answers as served")
    assert (settings["canary_ratings"], settings["canary_margin"]) == (80, 0.1)
    assert data["options_summary"] == (
        "method orpo · best-of-4 · reward-model pairs off · held-out: answers as served "
        "(best-of-n once a reward model is active)"
    )
    # Its cost in time, per round and in all.
    one, two = data["rounds"]
    assert (one["policy_train_seconds"], one["reward_train_seconds"]) == (300.0, 120.0)
    assert (one["policy_run_seconds"], one["reward_run_seconds"]) == (340.0, 150.0)
    assert (one["answer_p50_seconds"], one["answer_p90_seconds"]) == (3.0, 10.0)
    assert (one["reward_model"], one["reward_accuracy"]) == ("paraphrase-rm-v1", 0.71)
    assert two["answer_p50_seconds"] == 9.0
    assert (two["best_of_n_answers"], two["unscored_answers"]) == (46, 2)
    assert two["policy_thumbs_up_rate"] == 0.5
    assert (two["traffic_best_of_n_answers"], two["traffic_unscored_answers"]) == (3, 1)
    assert "best_of_n_answers" not in one  # measured without best-of-n: no such fields
    assert data["costs"] == {
        "policy_train_seconds": 610.0,
        "reward_train_seconds": 245.0,
        "answer_p50_seconds": 8.0,
        "answer_p90_seconds": 12.0,
        "canary_rounds": 1,
        "canary_ratings": 40,
    }
    assert data["cost_summary"] == (
        "time: policy training 610 s, reward-model training 245 s, answer p50 8.0 s; "
        "canary verdicts: 40 live ratings in 1 round"
    )
    markdown = paths["markdown"].read_text("utf-8")
    assert data["options_summary"] in markdown and data["cost_summary"] in markdown
    # The canary's live verdict and the time its traffic took.
    assert (one["canary_seconds"], two["canary_seconds"]) == (95.0, 0.0)
    assert f"succeeded promoted ({one['canary_live']})" in markdown
    assert "| round 1 | 0.42 |" in markdown
    assert "succeeded acc 0.71 → paraphrase-rm-v1 | 300 / 120 | 3.0 |" in markdown
    assert "| 0.50 |" in markdown  # round 2's policy-alone rate
    page = paths["html"].read_text("utf-8")
    assert "best-of-4" in page and "answer p50 s" in page and "300 / 120" in page


def test_a_run_without_the_options_reports_them_off(tmp_path: Path) -> None:
    from tests.simulation.test_report_and_command import _result

    data = json.loads(write_report(_result(tmp_path), tmp_path / "r")["json"].read_text("utf-8"))
    assert data["options_summary"] == (
        "method dpo · best-of-n off · reward-model pairs off · held-out: the policy alone"
    )
    assert data["rounds"][0]["reward_run_status"] == ""
    assert data["rounds"][0]["answer_p50_seconds"] is None
    assert data["cost_summary"].endswith("no answers")


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 11)], 0.9) == 9.0


def test_the_kto_control_deals_the_same_labels_out_at_random() -> None:
    from bot.simulation.control import shuffled_labels

    rows = [
        {"prompt": [], "completion": [{"role": "assistant", "content": str(i)}], "label": i < 30}
        for i in range(100)
    ]
    shuffled = shuffled_labels(rows, seed=1)
    assert sum(r["label"] for r in shuffled) == 30  # as many 👍 as people gave
    assert [r["completion"] for r in shuffled] == [r["completion"] for r in rows]
    moved = sum(a["label"] != b["label"] for a, b in zip(rows, shuffled, strict=True))
    assert moved > 20  # the link between an answer and its label is broken


async def test_a_best_of_n_control_picks_with_its_own_shuffled_reward_model(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real reward model learned from the feedback: a control that picked its best-of-n
    with it would carry the feedback's gain. The control trains its own reward model on the
    shuffled pairs and measures with that, at the same n. (The trainers themselves run in the
    slow closed-loop test and the measured simulations.)"""
    from bot.simulation import control
    from bot.simulation.heldout import BestOfNMeasure
    from bot.simulation.runner import Simulation
    from loopgram.adapter_server import HttpAdapterServer
    from loopgram.best_of_n import BestOfNPlan
    from loopgram.reward_client import RewardModelRef
    from training import pipeline

    trained: list[tuple[str, str]] = []

    def fake_trainer(kind: str, folder: str) -> Any:
        def train(
            settings: Any, config: TrainConfig, rows: list[Any], *, seed: int, draw: int = 0
        ) -> Any:
            trained.append((kind, config.method))
            return tmp_path / folder, len(rows)

        return train

    monkeypatch.setattr(
        control, "train_shuffled_control", fake_trainer("policy", "paraphrase-shuffled-control")
    )
    monkeypatch.setattr(
        control,
        "train_shuffled_reward_model",
        fake_trainer("reward", "paraphrase-rm-shuffled-control"),
    )
    monkeypatch.setattr(HttpAdapterServer, "load", lambda self, name, path: None)
    monkeypatch.setattr(pipeline, "resolve_model_path", lambda settings: tmp_path / "base")
    real = BestOfNMeasure(
        service=object(),  # type: ignore[arg-type]
        plans={"paraphrase": BestOfNPlan(4, RewardModelRef("paraphrase-rm-v2", "/rm/v2"))},
    )
    measured: list[tuple[dict[str, str], Any]] = []

    async def best_of_n(llm: Any) -> BestOfNMeasure:
        return real

    async def measure(llm: Any, models: dict[str, str], best: Any = "as the bot") -> Any:
        measured.append((models, best))
        return RateEstimate(10, 40, "paraphrase-shuffled-control")

    simulation = Simulation(SimulationOptions(data_dir=tmp_path, best_of_n=4))
    simulation.settings = settings_factory()
    simulation.db = None  # type: ignore[assignment]
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    simulation.trained_on = {
        "paraphrase": [TrainingSnapshot([row] * 30, [row] * 40, adapter="paraphrase-v1")]
    }

    async def serving() -> dict[str, str]:
        return {"paraphrase": "paraphrase-v1"}

    monkeypatch.setattr(simulation, "_serving", serving)
    monkeypatch.setattr(simulation, "_best_of_n", best_of_n)
    monkeypatch.setattr(simulation, "_measure", measure)

    estimate, detail = await simulation._shuffled_control(llm=None)  # type: ignore[arg-type]

    assert estimate is not None and estimate.rate == 0.25
    assert trained == [("policy", "dpo"), ("reward", "reward")]
    [(models, best)] = measured
    assert models == {"paraphrase": "paraphrase-shuffled-control"}
    assert best.service is real.service
    plan = best.plans["paraphrase"]
    assert plan.n == 4
    assert plan.reward_model == RewardModelRef(
        "paraphrase-rm-shuffled-control",
        str(tmp_path / "paraphrase-rm-shuffled-control"),
        str(tmp_path / "base"),
    )
    assert "paraphrase: 30 pairs" in detail
    assert "best-of-4 by a reward model on 40 shuffled pairs" in detail

    # Without an active reward model the control answers singly, as the rounds did.
    trained.clear()
    measured.clear()

    async def no_best_of_n(llm: Any) -> None:
        return None

    monkeypatch.setattr(simulation, "_best_of_n", no_best_of_n)
    await simulation._shuffled_control(llm=None)  # type: ignore[arg-type]
    assert trained == [("policy", "dpo")]
    assert measured[0][1] is None


def control_simulation(
    monkeypatch: pytest.MonkeyPatch,
    settings_factory: Any,
    options: SimulationOptions,
    *,
    train: Callable[..., Any],
    measure: Callable[..., Awaitable[Any]],
    served: dict[str, str],
) -> Any:
    """A Simulation ready for its control phase: `train` stands in for the control trainer
    and `measure` for the held-out measurement, nothing is loaded into a model server, there
    is no reward model (no best-of-n) and `served` is what the bot serves."""
    from bot.simulation import control
    from bot.simulation.runner import Simulation
    from loopgram.adapter_server import HttpAdapterServer

    async def no_best_of_n(llm: Any) -> None:
        return None

    async def serving() -> dict[str, str]:
        return served

    monkeypatch.setattr(control, "train_shuffled_control", train)
    monkeypatch.setattr(HttpAdapterServer, "load", lambda self, name, path: None)
    monkeypatch.setattr(HttpAdapterServer, "unload", lambda self, name: None)
    simulation = Simulation(options)
    simulation.settings = settings_factory()
    simulation.db = None
    monkeypatch.setattr(simulation, "_measure", measure)
    monkeypatch.setattr(simulation, "_best_of_n", no_best_of_n)
    monkeypatch.setattr(simulation, "_serving", serving)
    return simulation


async def test_the_control_trains_on_the_data_of_the_adapter_served_at_the_end(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control is compared with the model served at the end, so it trains on what that
    model's run trained on: not on a later candidate's data that was rolled back, nor on
    the canary traffic that came after. With the base model served it takes the last run's."""
    from bot.simulation import control

    seen: list[int] = []

    def train(
        settings: Any, config: TrainConfig, rows: list[Any], *, seed: int, draw: int = 0
    ) -> Any:
        seen.append(len(rows))
        return tmp_path / "paraphrase-shuffled-control", len(rows)

    async def measure(llm: Any, models: dict[str, str], best: Any = "as the bot") -> Any:
        return RateEstimate(1, 4, "paraphrase-shuffled-control")

    served = {"paraphrase": "paraphrase-v1"}
    simulation = control_simulation(
        monkeypatch,
        settings_factory,
        SimulationOptions(data_dir=tmp_path),
        train=train,
        measure=measure,
        served=served,
    )
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    simulation.trained_on = {
        "paraphrase": [
            TrainingSnapshot([row] * 10, adapter="paraphrase-v1"),
            TrainingSnapshot([row] * 25, adapter="paraphrase-v2"),  # rolled back
            TrainingSnapshot([row] * 31, adapter=None),  # a run that made no candidate
        ]
    }

    _estimate, detail = await simulation._shuffled_control(llm=None)  # type: ignore[arg-type]
    assert seen == [10] and "paraphrase: 10 pairs" in detail

    served["paraphrase"] = simulation.settings.llm.llm_model
    await simulation._shuffled_control(llm=None)  # type: ignore[arg-type]
    assert seen == [10, 31]

    # No run in the whole simulation: the control takes the buffer as it is at the end.
    read: list[str] = []

    def training_rows(config: TrainConfig, db: Any) -> list[Any]:
        read.append(config.method)
        return [row] * 7

    monkeypatch.setattr(control, "training_rows", training_rows)
    simulation.trained_on = {}
    await simulation._shuffled_control(llm=None)  # type: ignore[arg-type]
    assert seen == [10, 31, 7] and read == ["dpo"]  # no reward model is trained here


def test_a_round_keeps_what_its_run_trained_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot is tied to the run's candidate; a run whose example count differs from the
    snapshot (data that arrived in between) is logged, never silently trained on."""
    from bot.simulation.runner import Simulation
    from loopgram.models import Adapter, TrainingRun

    simulation = Simulation(SimulationOptions(data_dir=tmp_path))
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    snapshots = {"paraphrase": TrainingSnapshot([row] * 12)}
    run = TrainingRun(id=3, assistant="paraphrase", method="dpo", train_examples=12)
    simulation._keep_snapshot(snapshots, run, Adapter(name="paraphrase-v2", assistant="paraphrase"))
    assert simulation.trained_on["paraphrase"][0].adapter == "paraphrase-v2"
    assert "snapshot_mismatch" not in caplog.text

    other = TrainingRun(id=4, assistant="paraphrase", method="dpo", train_examples=14)
    simulation._keep_snapshot({"paraphrase": TrainingSnapshot([row] * 12)}, other, None)
    assert [s.adapter for s in simulation.trained_on["paraphrase"]] == ["paraphrase-v2", None]
    assert "snapshot_mismatch" in caplog.text and "trained=14 snapshot=12" in caplog.text
    # An assistant the round did not snapshot (no such assistant) is skipped.
    simulation._keep_snapshot({}, TrainingRun(id=5, assistant="summary", method="dpo"), None)
    assert "summary" not in simulation.trained_on


def _seeded(liked: list[bool], model: str) -> RateEstimate:
    return RateEstimate(sum(liked), len(liked), model, outcomes=tuple(liked), seed=0)


def test_discarded_candidates_are_reported_against_the_base_and_what_was_served(
    tmp_path: Path,
) -> None:
    base = _seeded([True] * 3 + [False] * 9, "loopgram-base")
    served = _seeded([True] * 4 + [False] * 8, "paraphrase-v1")
    rolled_back = _seeded([True] * 8 + [False] * 4, "paraphrase-v2-measured")
    options = SimulationOptions(data_dir=tmp_path / "data", rounds=1, measure_discarded=True)
    result = SimulationResult(
        baseline=base,
        rounds=[RoundResult(1, served, "paraphrase-v1", True, candidates=["paraphrase-v2"])],
        shuffled_control=None,
        control_detail="off",
        options=options,
        seconds=60.0,
        discarded=[
            DiscardedCandidate(1, "paraphrase-v2", "rolled back by the canary", rolled_back)
        ],
    )
    paths = write_report(result, tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    [discarded] = data["discarded"]
    assert (discarded["adapter"], discarded["why"], discarded["round"]) == (
        "paraphrase-v2",
        "rolled back by the canary",
        1,
    )
    assert discarded["thumbs_up_rate"] == pytest.approx(8 / 12, abs=1e-4)
    assert discarded["vs_baseline"]["difference"] == pytest.approx(5 / 12, abs=1e-4)
    assert discarded["vs_served"]["difference"] == pytest.approx(4 / 12, abs=1e-4)
    assert data["settings"]["measure_discarded"] is True
    markdown = paths["markdown"].read_text("utf-8")
    assert "| round 1: paraphrase-v2, rolled back by the canary (measured after) | 0.67 |" in (
        markdown
    )
    # ... and, paired, against what its round served instead (v1): +4 of 12 items.
    [row] = [line for line in markdown.splitlines() if "measured after" in line]
    assert "vs what was served +0.33 (" in row
    assert "rolled back by the canary" in paths["html"].read_text("utf-8")
    # An older report without the section still renders.
    del data["discarded"]
    assert "measured after" not in render_markdown(data, chart="simulation.png")


def test_measure_discarded_reaches_the_options_from_the_command_line(tmp_path: Path) -> None:
    assert build_options(**RAW, data_dir=tmp_path, measure_discarded=True).measure_discarded
    assert not build_options(**RAW, data_dir=tmp_path).measure_discarded
