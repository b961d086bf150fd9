"""DPO and KTO LoRA runs with TRL on a tiny model, the held-out score and the gate."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.training.conftest import pair_rows, thumb_rows
from training.config import TrainConfig
from training.evaluate import PolicyScorer, gate
from training.resources import WouldNotFitError, check_fits
from training.trainer import train_adapter

FAST = {"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "max_length": 96, "lora_r": 8}


def _weights(folder: Path) -> dict[str, float]:
    return {
        k: float(v.abs().sum()) for k, v in load_file(str(folder / "model.safetensors")).items()
    }


def test_dpo_learns_the_preference_and_leaves_the_base_alone(
    tiny_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _weights(tiny_model)
    with caplog.at_level(logging.INFO, logger="training.trainer"):
        outcome = train_adapter(
            TrainConfig(method="dpo", **FAST),
            pair_rows(24),
            model_path=tiny_model,
            output_dir=tmp_path / "chat-v1",
        )
    # Each step's metrics are log lines, not dicts printed into a demo's terminal.
    assert "training.step step=1 loss=" in caplog.text
    assert "'loss'" not in capsys.readouterr().out
    assert (outcome.adapter_path / "adapter_model.safetensors").exists()
    assert not list(tmp_path.glob(".*tmp*")), "a temporary training folder was left behind"
    lora = load_file(str(outcome.adapter_path / "adapter_model.safetensors"))
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in lora.items())
    assert _weights(tiny_model) == before
    assert outcome.final["loss"] < 0.69

    scorer = PolicyScorer(tiny_model)
    scorer.add_adapter("chat-v1", outcome.adapter_path)
    held_out = pair_rows(12, offset=1000)
    trained = scorer.score_pairs("chat-v1", held_out)
    base = scorer.score_pairs(None, held_out)
    assert base.accuracy == 0.5 and base.mean_margin == 0.0
    assert trained.accuracy > 0.9 and trained.mean_margin > 0
    assert gate(trained, base, margin=0.0).passed


def test_gate_rejects_a_deliberately_worse_candidate(tiny_model: Path, tmp_path: Path) -> None:
    good = train_adapter(
        TrainConfig(method="dpo", **FAST),
        pair_rows(24),
        model_path=tiny_model,
        output_dir=tmp_path / "good",
    )
    bad = train_adapter(
        TrainConfig(method="dpo", **FAST),
        pair_rows(24, flipped=True),
        model_path=tiny_model,
        output_dir=tmp_path / "bad",
    )
    scorer = PolicyScorer(tiny_model)
    scorer.add_adapter("good", good.adapter_path)
    scorer.add_adapter("bad", bad.adapter_path)
    held_out = pair_rows(12, offset=2000)
    bad_score, good_score = (
        scorer.score_pairs("bad", held_out),
        scorer.score_pairs("good", held_out),
    )
    result = gate(bad_score, good_score, margin=0.0)
    assert not result.passed and "worse than the active adapter" in result.reason
    assert result.evidence["p_worse"] < 0.05
    assert not gate(bad_score, good_score, margin=0.0, rule="better").passed
    against_base = gate(bad_score, scorer.score_pairs(None, held_out), margin=0.0)
    assert not against_base.passed


def test_kto_learns_from_unpaired_thumbs(tiny_model: Path, tmp_path: Path) -> None:
    before = _weights(tiny_model)
    outcome = train_adapter(
        TrainConfig(method="kto", **FAST),
        thumb_rows(32),
        model_path=tiny_model,
        output_dir=tmp_path / "kto",
    )
    lora = load_file(str(outcome.adapter_path / "adapter_model.safetensors"))
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in lora.items())
    assert _weights(tiny_model) == before
    scorer = PolicyScorer(tiny_model)
    scorer.add_adapter("kto", outcome.adapter_path)
    held_out = thumb_rows(12)
    assert (
        scorer.score_thumbs("kto", held_out).accuracy > scorer.score_thumbs(None, held_out).accuracy
    )


@pytest.mark.parametrize(
    "text",
    [
        "method: [dpo\n",  # not YAML
        "42\n",  # not a mapping
        "- {beta: 1}\n",
        "batch_size: eight\n",
        "eval_fraction: half\n",
        "epochs: two\n",
        "micro_batch_size: 2.5\n",
        "precompute_ref: maybe\n",
        "method: 5\n",
    ],
)
def test_a_broken_config_file_is_one_line_error(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed TRAIN_CONFIG or one with a wrong type is a clear refusal (exit 2), not a
    traceback, nor a run that fails hours later on a string where a number belongs."""
    from typer.testing import CliRunner

    from loopgram.cli import app

    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        TrainConfig.from_yaml(path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("error: bad training config: ")
    assert len(result.output.strip().splitlines()) == 1


def test_a_run_that_would_not_fit_is_refused(tiny_model: Path) -> None:
    assert check_fits(tiny_model, batch_size=8, max_length=256, budget_gb=1.0) > 0
    with pytest.raises(WouldNotFitError, match="lower micro_batch_size"):
        check_fits(tiny_model, batch_size=8, max_length=256, budget_gb=0.0001)


def test_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: kto\nbeta: 0.2\n")
    config = TrainConfig.from_yaml(path, assistant="paraphrase")
    assert (config.method, config.beta, config.assistant) == ("kto", 0.2, "paraphrase")
    path.write_text("learning_rat: 1\n")
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError):
        TrainConfig(method="ppo")


def test_rpo_raises_the_chosen_answers_likelihood_beyond_plain_dpo(
    tiny_model: Path, tmp_path: Path
) -> None:
    """sft_weight adds the chosen answers' NLL (TRL loss_type ["sigmoid", "sft"]): the chosen
    text itself becomes likelier than under plain DPO, which only widens the margin; the
    preference is still learnt, with the reference log-probs precomputed."""
    runs = {}
    for name, extra in {"dpo": {}, "rpo": {"sft_weight": 1.0, "precompute_ref": True}}.items():
        options = {**FAST, "learning_rate": 1e-3, "epochs": 2}
        runs[name] = train_adapter(
            TrainConfig(method="dpo", **options, **extra),  # type: ignore[arg-type]
            pair_rows(24),
            model_path=tiny_model,
            output_dir=tmp_path / name,
        )
    scorer = PolicyScorer(tiny_model)
    for name, outcome in runs.items():
        scorer.add_adapter(name, outcome.adapter_path)
    held_out = pair_rows(8, offset=3000)

    def chosen_logp(adapter: str) -> float:
        return sum(
            scorer._policy_logp(adapter, row["prompt"], row["chosen"][0]["content"])
            for row in held_out
        ) / len(held_out)

    assert chosen_logp("rpo") > chosen_logp("dpo") + 1.0
    assert scorer.score_pairs("rpo", held_out).accuracy > 0.9


def test_better_rule_decides_on_accuracy_and_uses_the_margin_only_to_break_ties() -> None:
    from functools import partial

    from training.evaluate import PreferenceScore

    better = partial(gate, rule="better")
    # More accurate but smaller margins than an adapter trained further from the base: passes.
    assert better(
        PreferenceScore(0.77, 0.22, 13), PreferenceScore(0.62, 0.60, 13), margin=0.0
    ).passed
    # Less accurate with larger margins: rejected.
    assert not better(
        PreferenceScore(0.62, 0.90, 13), PreferenceScore(0.77, 0.22, 13), margin=0.0
    ).passed
    # Same accuracy: the larger margin wins, unless an accuracy gain is required.
    assert better(PreferenceScore(0.7, 0.5, 10), PreferenceScore(0.7, 0.3, 10), margin=0.0).passed
    assert not better(
        PreferenceScore(0.7, 0.5, 10), PreferenceScore(0.7, 0.3, 10), margin=0.05
    ).passed
    assert better(PreferenceScore(0.8, 0.1, 10), PreferenceScore(0.7, 0.3, 10), margin=0.05).passed
    # Leaning the wrong way on average is never deployed, whatever the accuracy.
    assert not better(
        PreferenceScore(0.6, -0.1, 10), PreferenceScore(0.5, 0.0, 10), margin=0.0
    ).passed
    assert not better(PreferenceScore(0.9, 0.5, 0), PreferenceScore(0.5, 0.0, 0), margin=0.0).passed


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo", "reward"])
def test_every_method_trains_in_float32_without_mixed_precision(
    method: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's configs default to bf16 autocast, which on a CPU without native bf16 runs every
    matmul through torch's single-threaded fallback GEMM (minutes instead of seconds)."""
    import torch
    from transformers import Trainer

    seen: list[tuple[str, torch.dtype]] = []
    step = Trainer.training_step

    def recording_step(
        self: Trainer, model: torch.nn.Module, *args: object, **kw: object
    ) -> object:
        seen.append((str(self.accelerator.mixed_precision), next(model.parameters()).dtype))
        return step(self, model, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "training_step", recording_step)
    config = TrainConfig(method=method, **{**FAST, "epochs": 1})
    rows = thumb_rows(8) if method == "kto" else pair_rows(8)
    if method == "reward":
        from training.reward import train_reward_model

        train_reward_model(config, rows, model_path=tiny_model, output_dir=tmp_path / "rm")
    else:
        train_adapter(config, rows, model_path=tiny_model, output_dir=tmp_path / "policy")
    assert seen and set(seen) == {("no", torch.float32)}
