"""A simulated round with the comparison options on, on the tiny model: ORPO policy runs,
best-of-n serving, and the reward model trained on the training worker after the policy run.

The tiny model's reward model may or may not clear its gate, so this checks the machinery:
the runs' methods, the reward-model run the round queued, the time each cost and how long
people waited, and that the held-out answers (the control's too, with its own shuffled
reward model) went best-of-n exactly when a reward model was active.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("trl")

from sqlmodel import col, select

from bot.simulation.options import SimulationOptions
from bot.simulation.report import write_report
from bot.simulation.runner import Simulation
from loopgram.db import Database
from loopgram.models import AnswerCandidate, TrainingRun
from loopgram.settings import DatabaseSettings

pytestmark = pytest.mark.slow


async def test_an_orpo_round_with_best_of_n_trains_the_reward_model_and_times_it(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE_MODEL_PATH", str(tiny_model))
    monkeypatch.setenv("BUILTIN_MODEL_PORT", "0")
    data_dir = tmp_path / "sim"
    options = SimulationOptions(
        data_dir=data_dir,
        rounds=1,
        people=4,
        traffic=16,
        eval_samples=1,
        max_tokens=12,
        canary_min_ratings=4,
        canary_max_ratings=12,
        best_of_n=2,
        train={
            "method": "orpo",
            "epochs": 1,
            "batch_size": 4,
            "max_length": 512,
            "judge_samples": 0,
            "task_eval_items": 0,
            "min_examples": 2,
        },
        round_timeout=300,
    )
    result = await Simulation(options, progress=print).run()

    [round_one] = result.rounds
    assert round_one.run_status in {"succeeded", "rejected"}, round_one.detail
    assert round_one.reward_run_status in {"succeeded", "rejected", "refused"}, (
        round_one.reward_detail
    )
    assert round_one.train_seconds > 0 and round_one.policy_run_seconds >= round_one.train_seconds
    if round_one.reward_run_status != "refused":
        assert round_one.reward_train_seconds > 0
    assert len(round_one.answer_seconds) == round_one.traffic_answers > 0
    assert round_one.answer_p50 is not None and round_one.answer_p50 > 0
    # No reward model while the round's traffic was served: every answer was a single one.
    assert round_one.traffic_best_of_n == 0
    heldout = round_one.heldout
    if round_one.reward_model is not None:
        assert heldout.best_of_n + heldout.unscored == heldout.total
    else:
        assert heldout.best_of_n == heldout.unscored == 0
    control = result.shuffled_control
    assert control is not None, result.control_detail
    assert "chosen/rejected shuffled" in result.control_detail
    if round_one.reward_model is not None:
        # The control picks its best-of-2 with its own reward model, on shuffled pairs too.
        assert "best-of-2 by a reward model on" in result.control_detail
        assert control.best_of_n + control.unscored == control.total > 0
        assert (data_dir / "adapters" / "paraphrase" / "paraphrase-rm-shuffled-control").is_dir()
    else:
        assert "reward model" not in result.control_detail
        assert control.best_of_n == control.unscored == 0

    db = Database.from_settings(
        DatabaseSettings(database_url=f"sqlite:///{data_dir / 'loopgram.db'}")
    )
    try:
        with db.session() as session:
            runs = session.exec(select(TrainingRun).order_by(col(TrainingRun.id))).all()
            assert [r.method for r in runs] == ["orpo", "reward"]
            candidates = session.exec(select(AnswerCandidate)).all()
            if round_one.reward_run_status == "succeeded":
                # The canary phase's traffic came after the reward model: best-of-2 answers,
                # two candidates each, scored by that model (or unscored if it failed).
                per_answer = Counter(c.interaction_id for c in candidates)
                assert set(per_answer.values()) <= {2}
                assert {c.reward_model for c in candidates} <= {None, round_one.reward_model}
            else:
                assert candidates == []
    finally:
        db.dispose()

    data = json.loads(write_report(result, tmp_path / "report")["json"].read_text("utf-8"))
    assert data["settings"]["method"] == "orpo" and data["settings"]["best_of_n"] == 2
    assert data["rounds"][0]["reward_run_status"] == round_one.reward_run_status
    assert data["costs"]["answer_p50_seconds"] == pytest.approx(round_one.answer_p50, abs=0.01)
