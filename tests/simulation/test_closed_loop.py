"""The whole simulation on a tiny model: real bot, worker, beat, training process, canary.

The tiny model cannot please anyone, so this checks the machinery, not the uplift: traffic
fills the buffer, the beat schedule trains, the candidate is gated and judged, the held-out
rate is measured each round, and the shuffled control is trained and measured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("trl")

from sqlmodel import select

from bot.simulation.options import SimulationOptions
from bot.simulation.report import write_report
from bot.simulation.runner import Simulation
from loopgram.db import Database
from loopgram.models import (
    Interaction,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    TrainingRun,
)
from loopgram.settings import DatabaseSettings

pytestmark = pytest.mark.slow


async def test_a_round_trains_gates_and_measures(
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
        train={
            "epochs": 1,
            "batch_size": 4,
            "max_length": 512,
            "judge_samples": 0,
            "min_examples": 2,
        },
        round_timeout=240,
        measure_discarded=True,
    )
    messages: list[str] = []

    def progress(message: str) -> None:
        print(message)
        messages.append(message)

    result = await Simulation(options, progress=progress).run()

    prompts = Simulation(options).prompts
    heldout = len(prompts.heldout)
    assert result.baseline.total == heldout
    [round_one] = result.rounds
    assert round_one.heldout.total == heldout
    assert round_one.traffic_answers + round_one.traffic_failures == 16
    assert round_one.run_status in {"succeeded", "rejected"}, round_one.detail
    assert round_one.candidate == "paraphrase-v1"
    if round_one.run_status == "succeeded":
        assert round_one.canary in {"promoted", "rolled back", "undecided"}
        assert round_one.deployed == (round_one.canary == "promoted")
        assert round_one.canary_seconds > 0
        if round_one.canary != "undecided":  # judged at a look (4, 8 or 12 ratings)
            assert re.search(r" rated answers from \d+ people: ", round_one.canary_live), (
                round_one.canary_live
            )
            assert round_one.canary_live.split(" on ")[1].split()[0] in {"4", "8", "12"}
    assert result.shuffled_control is not None, result.control_detail
    assert result.shuffled_control.model == "paraphrase-shuffled-control"
    # A candidate the loop did not keep is measured on the same held-out items afterwards.
    if round_one.run_status == "rejected" or round_one.canary == "rolled back":
        [discarded] = result.discarded
        why = "rejected by the gate" if round_one.run_status == "rejected" else "rolled back"
        assert discarded.adapter == "paraphrase-v1" and discarded.why.startswith(why)
        assert discarded.heldout.total == heldout
        assert discarded.heldout.model == "paraphrase-v1-measured"
    else:
        assert result.discarded == []

    # The loop ran on what the people pressed: ratings and a finished run are stored.
    db = Database.from_settings(
        DatabaseSettings(database_url=f"sqlite:///{data_dir / 'loopgram.db'}")
    )
    try:
        with db.session() as session:
            assert session.exec(select(Rating)).all()
            interactions = session.exec(select(Interaction)).all()
            assert len(interactions) >= 16
            # A tiny random model's candidate is rejected by the gate (no positive margin),
            # so no canary ran: everything asked was a traffic prompt.
            if round_one.run_status == "rejected":
                assert {i.prompt for i in interactions} <= {p.text for p in prompts.train}
            run = session.exec(select(TrainingRun)).one()
            assert run.status == round_one.run_status and run.train_examples > 0
            # The control trained on the run's own pairs, not on the canary traffic since.
            assert f"paraphrase: {run.train_examples} pairs" in result.control_detail
            # The simulated moderator worked the queue the people's 👎 filled.
            flagged = session.exec(select(ReviewItem)).all()
            decisions = session.exec(select(ReviewDecision)).all()
            assert len(decisions) == round_one.reviewed
            assert round_one.reviewed >= min(len(flagged), 1)
            corrections = session.exec(
                select(PreferencePair).where(PreferencePair.source == "correction")
            ).all()
            assert len(corrections) == round_one.corrected
    finally:
        db.dispose()

    paths = write_report(result, tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    assert data["rounds"][0]["candidate"] == "paraphrase-v1"
    assert any("baseline" in m for m in messages)
