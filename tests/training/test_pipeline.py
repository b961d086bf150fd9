"""A whole training run on the tiny model, from the reward buffer to a canary."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from loopgram import adapters
from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback
from loopgram.models import AdapterStatus, PreferencePair, TrainingRun
from loopgram.settings import Settings
from tests.factories import add_interaction
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import CONCISE, RAMBLING
from training.config import TrainConfig
from training.lock import training_lock
from training.pipeline import due_assistants, run_training

FAST = {"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "max_length": 96, "lora_r": 8}


def fill_buffer(db: Database, n: int, *, prefer_concise: bool = True) -> None:
    """People asked, pressed 🔄, and liked one of the two versions."""
    for i in range(n):
        question = f"Question number {i}: can you help?"
        first = add_interaction(db, user_id=i, prompt=question, answer=RAMBLING, with_messages=True)
        second = add_interaction(
            db, user_id=i, prompt=question, answer=CONCISE, parent=first, with_messages=True
        )
        liked = second if prefer_concise else first
        db.call(apply_feedback, feedback=Feedback(interaction_id=liked, user_id=i, value=1))


@pytest.fixture
def settings(settings_factory, sqlite_url: str, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    # No judge listens on port 9: the preference gate decides, the judge is noted unavailable.
    return settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL="http://127.0.0.1:9/v1",
    )


def test_a_run_trains_gates_and_deploys_a_canary(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 30)
    assert sqlite_db.call(due_assistants, min_new_examples=20) == ["chat"]
    server = RecordingServer()
    report = run_training(
        settings=settings,
        config=TrainConfig(assistant="chat", method="dpo", **FAST),
        db=sqlite_db,
        server=server,
        model_path=tiny_model,
    )
    assert report.status == "succeeded", report.detail
    assert report.adapter == "chat-v1" and "chat-v1" in server.loaded
    adapter = sqlite_db.call(adapters.get_by_name, name="chat-v1")
    assert adapter.status == AdapterStatus.canary and Path(adapter.path).is_dir()
    assert adapter.metrics["gate"]["passed"] is True
    assert adapter.metrics["gate"]["judge"]["available"] is False
    run = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).one())
    assert run.status == "succeeded" and run.train_examples > 0 and run.eval_examples > 0
    pairs = sqlite_db.call(lambda *, session: session.exec(select(PreferencePair)).all())
    assert sum(p.consumed_by_run == run.id for p in pairs) == run.train_examples
    # The trained pairs no longer count as new.
    assert sqlite_db.call(due_assistants, min_new_examples=20) == []


def test_a_candidate_that_does_not_clear_the_gate_is_rejected_and_never_loaded(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 30)
    server = RecordingServer()
    report = run_training(
        settings=settings,
        # A margin no adapter can clear: the gate must say no and nothing may be deployed.
        config=TrainConfig(
            assistant="chat",
            method="dpo",
            gate_rule="better",
            gate_margin=1e6,
            **{**FAST, "epochs": 1},
        ),
        db=sqlite_db,
        server=server,
        model_path=tiny_model,
    )
    assert report.status == "rejected" and "does not beat" in report.detail
    assert server.calls == []
    assert sqlite_db.call(adapters.get_by_name, name="chat-v1").status == AdapterStatus.rejected
    assert sqlite_db.call(adapters.serving, assistant="chat") == (None, None)


def test_too_little_data_is_refused_with_a_reason(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 3)
    report = run_training(
        settings=settings,
        config=TrainConfig(assistant="chat", method="dpo", **FAST),
        db=sqlite_db,
        server=RecordingServer(),
        model_path=tiny_model,
    )
    assert report.status == "refused" and "at least 8 are needed" in report.detail


def test_a_second_trigger_does_nothing_while_a_run_holds_the_lock(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    with training_lock("chat", redis_url=None, data_dir=Path(settings.app.data_dir)) as held:
        assert held
        report = run_training(
            settings=settings,
            config=TrainConfig(assistant="chat", method="dpo", **FAST),
            db=sqlite_db,
            server=RecordingServer(),
            model_path=tiny_model,
        )
    assert report.status == "skipped" and report.run_id is None
    assert sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).all()) == []


def test_a_run_left_running_by_a_dead_process_is_marked_failed(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    def orphan(*, session: Session) -> None:
        session.add(TrainingRun(assistant="chat", method="dpo", status="running"))

    sqlite_db.call(orphan)
    run_training(
        settings=settings,
        config=TrainConfig(assistant="chat", method="dpo", **FAST),
        db=sqlite_db,
        server=RecordingServer(),
        model_path=tiny_model,
    )
    runs = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).all())
    assert runs[0].status == "failed" and "interrupted" in (runs[0].error or "")


def test_train_command_reports_a_refusal_in_json(tmp_path: Path, sqlite_url: str) -> None:
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "train", "--assistant", "chat", "--json"],
        env={**os.environ, "DATABASE_URL": sqlite_url, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["status"] == "refused" and "at least 8" in report["detail"]
    bad = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "train", "--method", "ppo"],
        env={**os.environ, "DATABASE_URL": sqlite_url, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad training config")
