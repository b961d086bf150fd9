"""Reward models on the tiny model: TRL RewardTrainer, held-out ranking, the registry's gate,
the scorer, and `loopgram train --method reward --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from sqlmodel import select

from loopgram import adapters
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.models import AdapterKind, AdapterStatus, PreferencePair, TrainingRun
from loopgram.settings import Settings
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import CONCISE, RAMBLING, pair_rows
from tests.training.test_pipeline import fill_buffer
from training import reward
from training.config import TrainConfig
from training.pipeline import due_assistants, run_training
from training.reward import RewardScorer, pairwise_score, reward_gate, train_reward_model

FAST = {"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "max_length": 96, "lora_r": 8}


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One reward model trained on the preference, one on the flipped preference."""
    folder = tmp_path_factory.mktemp("reward")
    config = TrainConfig(method="reward", **FAST)
    good = train_reward_model(
        config, pair_rows(24), model_path=tiny_model, output_dir=folder / "chat-rm-v1"
    )
    flipped = train_reward_model(
        config, pair_rows(24, flipped=True), model_path=tiny_model, output_dir=folder / "flip"
    )
    return {"good": good.adapter_path, "flipped": flipped.adapter_path}


def test_reward_model_ranks_held_out_pairs_above_chance_and_flipped_below(
    tiny_model: Path, trained: dict[str, Path]
) -> None:
    good = trained["good"]
    assert (good / "adapter_model.safetensors").exists() and (good / reward.META_FILE).exists()
    assert not list(good.parent.glob(".*tmp*")), "a temporary training folder was left behind"
    weights = load_file(str(good / "adapter_model.safetensors"))
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in weights.items())
    assert any("score" in k for k in weights), "the classification head is saved with the LoRA"

    scorer = RewardScorer(tiny_model)
    scorer.add("good", good)
    scorer.add("flipped", trained["flipped"])
    held_out = pair_rows(12, offset=1000)  # questions never trained on
    learned = scorer.evaluate("good", held_out)
    backwards = scorer.evaluate("flipped", held_out)
    assert learned.pairs == 12
    assert learned.accuracy > 0.9 and learned.mean_margin > 0
    assert backwards.accuracy < 0.1 and backwards.mean_margin < 0
    assert learned.loss < backwards.loss


def test_scorer_picks_the_preferred_answer_and_is_cached(
    tiny_model: Path, trained: dict[str, Path]
) -> None:
    scorer = RewardScorer(tiny_model)
    scorer.add("good", trained["good"])
    prompt = [{"role": "user", "content": "Question number 4242: can you help?"}]
    scores = scorer.score("good", [(prompt, RAMBLING), (prompt, CONCISE), (prompt, RAMBLING)])
    assert scores[1] > scores[0] and scores[0] == pytest.approx(scores[2], abs=1e-5)
    # Batched scoring gives each row the score it gets alone (padding does not leak in).
    assert scorer.score("good", [(prompt, CONCISE)])[0] == pytest.approx(scores[1], abs=1e-4)

    reward.clear_cache()
    try:
        first = reward.scorer_for(tiny_model)
        assert reward.scorer_for(tiny_model) is first
        first.add("good", trained["good"])
        first.add("good", trained["good"])  # attached once
        assert first.adapters == ["good"]
        bound = reward.ActiveRewardModel("good", first)
        assert bound.best(prompt, [RAMBLING, CONCISE, RAMBLING]) == 1
    finally:
        reward.clear_cache()


def test_gate_needs_chance_plus_a_margin_and_a_win_over_the_active_model() -> None:
    strong = pairwise_score([2.0, 1.5, 3.0, -0.5])  # 0.75
    weak = pairwise_score([0.1, -0.2, 0.3, -0.4])  # 0.5: chance
    assert not reward_gate(weak, None, min_accuracy=0.55).passed
    assert "chance" in reward_gate(weak, None, min_accuracy=0.55).reason
    assert reward_gate(strong, None, min_accuracy=0.55).passed
    assert not reward_gate(strong, pairwise_score([1.0, 1.0, 1.0, 1.0]), min_accuracy=0.55).passed
    # Equal accuracy: the lower held-out Bradley-Terry loss wins.
    tie = pairwise_score([0.2, 0.2, 0.2, -3.0])
    assert tie.accuracy == strong.accuracy and tie.loss > strong.loss
    assert reward_gate(strong, tie, min_accuracy=0.55).passed
    assert not reward_gate(tie, strong, min_accuracy=0.55).passed
    assert not reward_gate(pairwise_score([]), None, min_accuracy=0.55).passed


@pytest.fixture
def settings(settings_factory, sqlite_url: str, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL="http://127.0.0.1:9/v1",
    )


def _train(settings: Settings, db: Database, model: Path, **options: object) -> object:
    server = RecordingServer()
    report = run_training(
        settings=settings,
        config=TrainConfig(assistant="chat", method="reward", **{**FAST, **options}),  # type: ignore[arg-type]
        db=db,
        server=server,
        model_path=model,
    )
    assert server.calls == [], "a reward model never touches the model server"
    return report


def test_registry_activates_a_winner_and_refuses_a_reward_model_that_loses(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 30)
    first = _train(settings, sqlite_db, tiny_model)
    assert first.status == "succeeded", first.detail  # type: ignore[attr-defined]
    assert first.adapter == "chat-rm-v1"  # type: ignore[attr-defined]
    metrics = first.metrics  # type: ignore[attr-defined]
    assert metrics["heldout_accuracy"] > 0.9 and metrics["heldout_mean_margin"] > 0
    assert metrics["heldout"]["pairs"] > 0 and metrics["against"] == "none"
    rm = sqlite_db.call(adapters.get_by_name, name="chat-rm-v1")
    assert rm.kind == AdapterKind.reward and rm.status == AdapterStatus.active
    assert sqlite_db.call(adapters.active_reward_model, assistant="chat").name == "chat-rm-v1"
    # Not a policy adapter: nothing serves it, the policy numbering is untouched, the
    # policy's buffer still counts as new and no pair is marked consumed.
    assert sqlite_db.call(adapters.serving, assistant="chat") == (None, None)
    assert sqlite_db.call(adapters.next_version, assistant="chat") == 1
    assert sqlite_db.call(due_assistants, min_new_examples=20) == ["chat"]
    pairs = sqlite_db.call(lambda *, session: session.exec(select(PreferencePair)).all())
    assert all(p.consumed_by_run is None for p in pairs)
    with pytest.raises(LoopgramError, match="reward model"):
        sqlite_db.call(adapters.deploy, name="chat-rm-v1", server=RecordingServer())

    # A weaker reward model (one epoch instead of three): above chance, but it does not beat
    # the active one on the same held-out pairs (equal accuracy, higher loss): recorded,
    # rejected with the reason, never used.
    second = _train(settings, sqlite_db, tiny_model, epochs=1)
    assert second.status == "rejected" and second.adapter == "chat-rm-v2"  # type: ignore[attr-defined]
    assert "does not beat the active reward model" in second.detail  # type: ignore[attr-defined]
    gate = second.metrics["gate"]  # type: ignore[attr-defined]
    assert gate["against"]["name"] == "chat-rm-v1" and gate["active"]["accuracy"] > 0.9
    loser = sqlite_db.call(adapters.get_by_name, name="chat-rm-v2")
    assert loser.status == AdapterStatus.rejected and loser.deployed_at is None
    assert "does not beat" in loser.metrics["rejected_because"]
    assert sqlite_db.call(adapters.active_reward_model, assistant="chat").name == "chat-rm-v1"
    runs = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).all())
    assert [(r.method, r.status) for r in runs] == [
        ("reward", "succeeded"),
        ("reward", "rejected"),
    ]
    assert runs[0].metrics["heldout"]["accuracy"] == metrics["heldout_accuracy"]

    # The scorer behind serving loads the active one from the registry.
    reward.clear_cache()
    try:
        active = reward.load_active(sqlite_db, "chat")
        assert active is not None and active.name == "chat-rm-v1"
        prompt = [{"role": "user", "content": "Question number 777: can you help?"}]
        assert active.best(prompt, [RAMBLING, CONCISE]) == 1
        assert reward.load_active(sqlite_db, "paraphrase") is None
    finally:
        reward.clear_cache()


def _cli(
    tmp_path: Path, sqlite_url: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopgram.cli", *args],
        env={**os.environ, "DATABASE_URL": sqlite_url, "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_train_command_refuses_too_little_data_in_one_line(tmp_path: Path, sqlite_url: str) -> None:
    result = _cli(tmp_path, sqlite_url, "train", "--method", "reward", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["status"] == "refused"
    assert report["detail"] == "0 training pairs for chat's reward model, at least 8 are needed"


def test_train_command_reports_reward_metrics_in_json(
    tmp_path: Path, sqlite_url: str, sqlite_db: Database, tiny_model: Path
) -> None:
    fill_buffer(sqlite_db, 30)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**FAST, "judge_samples": 0}), encoding="utf-8")
    env = {"BASE_MODEL_PATH": str(tiny_model), "ADAPTERS_DIR": str(tmp_path / "adapters")}
    result = _cli(
        tmp_path,
        sqlite_url,
        "train",
        "--method",
        "reward",
        "--config",
        str(config),
        "--json",
        **env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)  # the trainer's log lines went to stderr
    assert report["status"] == "succeeded" and report["adapter"] == "chat-rm-v1"
    assert report["metrics"]["heldout_accuracy"] > 0.9
    assert report["metrics"]["heldout"]["pairs"] > 0
    listed = _cli(tmp_path, sqlite_url, "adapters", "list", "--json", **env)
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["kind"], r["status"]) for r in rows] == [
        ("chat-rm-v1", "reward", "active")
    ]
    refused = _cli(tmp_path, sqlite_url, "adapters", "deploy", "chat-rm-v1", **env)
    assert refused.returncode == 2 and "reward model" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
