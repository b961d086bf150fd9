"""ORPO (TRL's experimental ORPOTrainer) on the tiny model: trained on the same pairs as DPO,
without a reference model, saved as an adapter that loads, judged by the same gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from loopgram import adapters
from loopgram.db import Database
from loopgram.models import AdapterStatus
from loopgram.settings import Settings
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import pair_rows
from tests.training.test_pipeline import fill_buffer
from training.config import TrainConfig
from training.evaluate import PolicyScorer, gate
from training.pipeline import run_training
from training.resources import estimate_peak_bytes
from training.trainer import train_adapter

FAST: dict[str, Any] = {
    "learning_rate": 5e-3,
    "epochs": 3,
    "batch_size": 8,
    "max_length": 96,
    "lora_r": 8,
}


@pytest.fixture
def settings(settings_factory, sqlite_url: str, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    made: Settings = settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL="http://127.0.0.1:9/v1",  # no judge: the preference gate decides
    )
    return made


def test_orpo_learns_the_preference_without_a_reference(tiny_model: Path, tmp_path: Path) -> None:
    before = load_file(str(tiny_model / "model.safetensors"))
    outcome = train_adapter(
        TrainConfig(method="orpo", **FAST),
        pair_rows(24),
        model_path=tiny_model,
        output_dir=tmp_path / "orpo",
    )
    lora = load_file(str(outcome.adapter_path / "adapter_model.safetensors"))
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in lora.items())
    assert not list(tmp_path.glob(".*tmp*")), "a temporary training folder was left behind"
    after = load_file(str(tiny_model / "model.safetensors"))
    assert all(bool((before[k] == after[k]).all()) for k in before), "the base was changed"
    losses = [h["loss"] for h in outcome.history if "loss" in h]
    assert losses[-1] < losses[0]

    scorer = PolicyScorer(tiny_model)
    scorer.add_adapter("orpo", outcome.adapter_path)
    held_out = pair_rows(12, offset=4000)
    trained, base = scorer.score_pairs("orpo", held_out), scorer.score_pairs(None, held_out)
    assert trained.accuracy > 0.9 and trained.mean_margin > 0
    assert gate(trained, base, margin=0.0).passed


def test_pairs_whose_prompt_fills_max_length_are_refused_clearly(
    tiny_model: Path, tmp_path: Path
) -> None:
    rows = pair_rows(8)
    for row in rows:
        row["prompt"] = [{"role": "user", "content": "can you help? " * 200}]
    with pytest.raises(ValueError, match="fits max_length=32 tokens"):
        train_adapter(
            TrainConfig(method="orpo", **{**FAST, "max_length": 32}),
            rows,
            model_path=tiny_model,
            output_dir=tmp_path / "orpo",
        )
    assert not (tmp_path / "orpo").exists()


def test_an_orpo_run_is_gated_registered_and_canaried(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 30)
    server = RecordingServer()
    report = run_training(
        settings=settings,
        config=TrainConfig(assistant="chat", method="orpo", **FAST),
        db=sqlite_db,
        server=server,
        model_path=tiny_model,
    )
    assert report.status == "succeeded", report.detail
    adapter = sqlite_db.call(adapters.get_by_name, name="chat-v1")
    assert adapter.method == "orpo" and adapter.status == AdapterStatus.canary
    assert "chat-v1" in server.loaded
    gate_record = adapter.metrics["gate"]
    # Scored as pairs (the implicit DPO margin against the base), not as thumbs.
    assert gate_record["candidate"]["pairs"] > 0
    assert gate_record["candidate"]["accuracy"] > gate_record["active"]["accuracy"] == 0.5


def test_orpo_needs_less_memory_than_dpo(tiny_model: Path) -> None:
    dpo = estimate_peak_bytes(tiny_model, batch_size=8, max_length=256)
    orpo = estimate_peak_bytes(tiny_model, batch_size=8, max_length=256, reference=False)
    assert 0 < orpo < dpo
    # A reward model has neither a reference pass nor vocabulary-wide logits (a simulated
    # round's reward run was refused at 16 GiB, twice a DPO run, before this was counted).
    reward = estimate_peak_bytes(
        tiny_model, batch_size=8, max_length=256, reference=False, vocab_logits=False
    )
    assert 0 < reward < orpo


def test_an_unknown_method_is_a_clear_error(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="method must be one of dpo, orpo, kto, reward"):
        TrainConfig(method="orpoo")
    env = {**os.environ, "DATABASE_URL": sqlite_url, "DATA_DIR": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "train", "--method", "orpo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["status"] == "refused"  # accepted, but the buffer is empty
    bad = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "train", "--method", "orpoo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "bad training config: method must be one of dpo, orpo, kto, reward" in bad.stderr


def test_a_scheduled_run_takes_its_method_from_train_config(  # type: ignore[no-untyped-def]
    sqlite_db: Database, settings_factory, sqlite_url: str, tmp_path: Path
) -> None:
    """The schedule queues `train_assistant(assistant)` without a method: TRAIN_CONFIG's
    `method:` decides (how `loopgram simulate --method orpo` reaches its runs)."""
    from sqlmodel import select

    from loopgram.models import TrainingRun
    from workers import context
    from workers.tasks import train_assistant

    config = tmp_path / "train.yaml"
    config.write_text("method: orpo\n", "utf-8")
    settings = settings_factory(DATABASE_URL=sqlite_url, TRAIN_CONFIG=str(config))
    context.use_settings(settings)
    context.use_database(sqlite_db)
    try:
        report = train_assistant("chat")
        explicit = train_assistant("chat", "kto")
    finally:
        context.use_settings(None)
        context.use_database(None)
    assert report["status"] == explicit["status"] == "refused"  # the buffer is empty
    runs = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).all())
    assert [r.method for r in runs] == ["orpo", "kto"]
