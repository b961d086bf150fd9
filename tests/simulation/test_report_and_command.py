"""The report's JSON shape (the CLI contract), its files, and clear errors on bad options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.simulation.heldout import RateEstimate, as_user_sees
from bot.simulation.options import SimulationOptions
from bot.simulation.report import write_report
from bot.simulation.results import RoundResult, SimulationResult
from loopgram.cli import app


def _result(tmp_path: Path, *, control: bool = True) -> SimulationResult:
    options = SimulationOptions(data_dir=tmp_path / "data", rounds=2)
    rounds = [
        RoundResult(
            1,
            RateEstimate(20, 48, "paraphrase-v1"),
            "paraphrase-v1",
            True,
            candidate="paraphrase-v1",
            run_status="succeeded",
            canary="promoted",
        ),
        RoundResult(
            2,
            RateEstimate(30, 48, "paraphrase-v1"),
            "paraphrase-v1",
            False,
            candidate="paraphrase-v2",
            run_status="rejected",
        ),
    ]
    return SimulationResult(
        baseline=RateEstimate(12, 48, "loopgram-base"),
        rounds=rounds,
        shuffled_control=RateEstimate(13, 48, "paraphrase-shuffled-control") if control else None,
        control_detail=(
            "paraphrase: 40 pairs with chosen/rejected shuffled"
            if control
            else "control training failed: boom"
        ),
        options=options,
        seconds=12.5,
    )


def test_json_follows_the_cli_contract_and_every_file_is_written(tmp_path: Path) -> None:
    paths = write_report(_result(tmp_path), tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    for point in data["rounds"]:
        assert {"round", "thumbs_up_rate", "ci_low", "ci_high", "adapter", "deployed"} <= set(point)
        assert point["ci_low"] <= point["thumbs_up_rate"] <= point["ci_high"]
    assert data["rounds"][1]["deployed"] is False
    assert data["baseline"]["thumbs_up_rate"] == 0.25
    assert data["shuffled_control"]["thumbs_up_rate"] == pytest.approx(13 / 48, abs=1e-4)
    assert data["shuffled_control"]["trained_on"] == (
        "paraphrase: 40 pairs with chosen/rejected shuffled"
    )
    assert data["summary"] == "👍 rate 0.25 → 0.62 after 2 rounds (shuffled control 0.27)"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert data["summary"] in paths["markdown"].read_text("utf-8")
    assert "paraphrase-v2" in paths["html"].read_text("utf-8")


def test_a_missing_control_is_reported_not_hidden(tmp_path: Path) -> None:
    result = _result(tmp_path, control=False)
    data = json.loads(write_report(result, tmp_path / "r")["json"].read_text("utf-8"))
    assert data["shuffled_control"] == {
        "thumbs_up_rate": None,
        "detail": "control training failed: boom",
    }
    assert "no shuffled control: control training failed" in result.summary()


def test_answers_are_judged_as_telegram_shows_them() -> None:
    assert as_user_sees("**Short** & <b>sweet</b>") == "Short & <b>sweet</b>"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--assistants", "nope"], "--assistants must be a comma-separated list"),
        (["--languages", "de"], "--languages must be a comma-separated list"),
        (["--languages", "en,ru", "--people", "3"], "every language at least two people"),
    ],
)
def test_bad_options_fail_with_one_clear_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unusable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", "utf-8")
    result = CliRunner().invoke(app, ["simulate", "--data-dir", str(blocker / "sim")])
    assert result.exit_code == 2
    assert "error: cannot use" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a list\n", "must be a YAML mapping"),
        ("epochs: [1\n", "cannot read --train-config"),
        ("epochs: 1\nwarp_speed: 9\n", "unknown options ['warp_speed']"),
        ("sft_weight: -1\n", "sft_weight must not be negative"),
    ],
)
def test_a_bad_train_config_fails_with_one_clear_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(content, "utf-8")
    result = CliRunner().invoke(app, ["simulate", "--train-config", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_train_config_goes_over_the_simulations_training_options(tmp_path: Path) -> None:
    from bot.simulation.command import train_options

    path = tmp_path / "train.yaml"
    path.write_text("sft_weight: 0.5\nepochs: 1\n", "utf-8")
    merged = train_options(path)
    assert merged["sft_weight"] == 0.5 and merged["epochs"] == 1
    assert merged["max_length"] == 448  # the simulation's own value stays where not given


def test_the_report_says_what_each_version_s_answers_were_judged(tmp_path: Path) -> None:
    """Verdict counts and mean length per version: whether a gain came from shorter answers,
    fewer that ignore the source, or something else. Versions measured without them (older
    JSON) are left out of that table, and a report with none has no such table."""
    result = _result(tmp_path)
    base = RateEstimate(
        12, 48, "loopgram-base", verdicts=(("chatter", 30), ("concise", 12), ("a copy", 6))
    )
    base = dataclasses.replace(base, mean_words=21.25)
    control = RateEstimate(
        20,
        48,
        "paraphrase-shuffled-control",
        verdicts=(("concise", 20), ("ignores the source", 28)),
        mean_words=9.0,
    )
    result = dataclasses.replace(result, baseline=base, shuffled_control=control)
    paths = write_report(result, tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    assert data["baseline"]["verdicts"] == {"chatter": 30, "concise": 12, "a copy": 6}
    assert data["baseline"]["mean_words"] == 21.2  # rounded to one decimal
    assert "verdicts" not in data["rounds"][0]
    markdown = paths["markdown"].read_text("utf-8")
    assert "| version | mean words | concise | chatter | ignores the source | a copy |" in markdown
    assert "| baseline (no training) | 21.2 | 12 | 30 | 0 | 6 |" in markdown
    assert "| shuffled-ratings control | 9.0 | 20 | 0 | 28 | 0 |" in markdown
    assert "| round 1 |" not in markdown.split("Verdicts on the held-out answers")[1]
    assert "<th>ignores the source</th>" in paths["html"].read_text("utf-8")

    plain = write_report(_result(tmp_path), tmp_path / "plain")
    assert "Verdicts on" not in plain["markdown"].read_text("utf-8")
    assert "Verdicts on" not in plain["html"].read_text("utf-8")
