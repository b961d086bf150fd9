"""Several draws of the shuffled control (`--control-draws`): each trained on its own shuffle
of the same data, measured on the same items, and reported as a mean and a range.

One shuffle is one draw of a control that itself varies (measured runs drifted from -16 to
+20 points against the base model), so a single draw can look like a gain or a loss that is
only the draw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.simulation.control import control_name
from bot.simulation.heldout import RateEstimate
from bot.simulation.options import SimulationOptions
from bot.simulation.report import write_report
from bot.simulation.results import RoundResult, SimulationResult, TrainingSnapshot
from loopgram.cli import app
from tests.simulation.test_comparison_options import control_simulation
from training.config import TrainConfig

ADAPTER = "paraphrase-v1"


def _estimate(liked: list[int], model: str, n: int = 40) -> RateEstimate:
    outcomes = tuple(k in liked for k in range(n))
    return RateEstimate(sum(outcomes), n, model, outcomes=outcomes, seed=0)


def _result(controls: list[RateEstimate]) -> SimulationResult:
    base = _estimate(list(range(0, 40, 4)), "loopgram-base")  # 10 of 40
    tuned = _estimate([k for k in range(40) if k % 4 != 3], ADAPTER)  # 30 of 40
    return SimulationResult(
        base,
        [RoundResult(1, tuned, ADAPTER, True)],
        controls[0] if controls else None,
        "paraphrase: 40 pairs with chosen/rejected shuffled; 3 draws, shuffle seeds 0…2",
        SimulationOptions(data_dir=Path("unused"), rounds=1, control_draws=len(controls) or 1),
        3.0,
        extra_controls=controls[1:],
    )


def _three_draws() -> list[RateEstimate]:
    base_liked = list(range(0, 40, 4))
    return [
        _estimate(base_liked, control_name("paraphrase", "shuffled", 0)),  # the base's items
        _estimate(
            [*base_liked, 1, 2, 5, 6, 9, 10, 13, 14], control_name("paraphrase", "shuffled", 1)
        ),
        _estimate(base_liked[2:], control_name("paraphrase", "shuffled", 2)),  # two fewer
    ]


def test_each_draw_has_a_name_of_its_own_and_the_first_keeps_the_old_one() -> None:
    assert control_name("paraphrase", "shuffled", 0) == "paraphrase-shuffled-control"
    assert control_name("paraphrase", "shuffled", 1) == "paraphrase-shuffled-control-2"
    assert control_name("summarize", "rm-shuffled", 2) == "summarize-rm-shuffled-control-3"


def test_the_summary_gives_the_mean_and_range_of_the_draws() -> None:
    result = _result(_three_draws())
    summary = result.summary()
    # Rates 0.25, 0.45, 0.20: mean 0.30.
    assert "(shuffled control 0.30, mean of 3 draws 0.20–0.45)" in summary
    # Against the base: 0, +0.20, -0.05; the +0.20 draw is outside noise (8 items, one way).
    assert "control vs base +0.05 mean of 3 draws (-0.05…+0.20, 2 within noise)" in summary
    # The round (0.75) against each draw: +0.50, +0.30, +0.55; none within noise.
    assert "vs control +0.45 mean of 3 draws (+0.30…+0.55, 0 within noise)" in summary


def test_one_draw_reads_as_before() -> None:
    [first, *_] = _three_draws()
    summary = _result([first]).summary()
    assert "(shuffled control 0.25); paired:" in summary
    assert "control vs base +0.00 [" in summary and "mean of" not in summary


def test_json_and_report_carry_every_draw(tmp_path: Path) -> None:
    draws = _three_draws()
    paths = write_report(_result(draws), tmp_path / "report")
    data = json.loads(paths["json"].read_text("utf-8"))
    # The first draw stays where older readers of the JSON look for the control.
    assert data["shuffled_control"]["adapter"] == "paraphrase-shuffled-control"
    assert [d["adapter"] for d in data["shuffled_controls"]] == [d.model for d in draws]
    assert [d["vs_baseline"]["difference"] for d in data["shuffled_controls"]] == [
        0.0,
        0.2,
        -0.05,
    ]
    assert [d["final_vs"]["difference"] for d in data["shuffled_controls"]] == [0.5, 0.3, 0.55]
    summary = data["controls_summary"]
    assert summary["draws"] == 3
    assert summary["thumbs_up_rate"] == {"mean": 0.3, "min": 0.2, "max": 0.45}
    assert summary["vs_baseline"] == {"mean": 0.05, "min": -0.05, "max": 0.2, "within_noise": 2}
    assert summary["final_vs"]["within_noise"] == 0
    assert data["settings"]["control_draws"] == 3
    markdown = paths["markdown"].read_text("utf-8")
    for draw in (1, 2, 3):
        assert f"| shuffled-ratings control, draw {draw} |" in markdown
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_the_chart_title_wraps_the_long_paired_line_and_keeps_every_word() -> None:
    from bot.simulation.report import chart_title

    summary = _result(_three_draws()).summary()
    title = chart_title(summary)
    assert all(len(line) <= 110 for line in title.splitlines())
    assert len(title.splitlines()) >= 3  # the rate line, then the paired line over two
    # Every word stays; only the "; " between the parts becomes a line break.
    assert title.split() == summary.replace("👍", "thumbs-up").replace("; ", " ").split()


def test_an_older_report_without_draws_still_renders(tmp_path: Path) -> None:
    """Reports written before draws existed have `shuffled_control` only."""
    from bot.simulation.report import render_markdown

    data = _result(_three_draws()[:1]).as_dict()
    del data["shuffled_controls"], data["controls_summary"]
    markdown = render_markdown(data, chart="c.png")
    assert "| shuffled-ratings control | 0.25 |" in markdown


def _simulation(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch, *, draws: int
) -> tuple[Any, list[tuple[int, int, int]], list[dict[str, str]]]:
    """A Simulation whose control trainer and measurement are recorded, not run."""
    trained: list[tuple[int, int, int]] = []
    measured: list[dict[str, str]] = []

    def train(
        settings: Any, config: TrainConfig, rows: list[Any], *, seed: int, draw: int = 0
    ) -> Any:
        if draw == 2:
            raise RuntimeError("out of memory")
        trained.append((seed, draw, len(rows)))
        return tmp_path / control_name(config.assistant, "shuffled", draw), len(rows)

    async def measure(llm: Any, models: dict[str, str], best: Any = "as the bot") -> Any:
        measured.append(models)
        return RateEstimate(len(measured), 40, models["paraphrase"])

    simulation = control_simulation(
        monkeypatch,
        settings_factory,
        SimulationOptions(data_dir=tmp_path, seed=7, control_draws=draws),
        train=train,
        measure=measure,
        served={"paraphrase": ADAPTER},
    )
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    simulation.trained_on = {"paraphrase": [TrainingSnapshot([row] * 12, adapter=ADAPTER)]}
    return simulation, trained, measured


async def test_each_draw_trains_on_the_same_data_with_its_own_shuffle(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulation, trained, measured = _simulation(tmp_path, settings_factory, monkeypatch, draws=2)
    controls, detail = await simulation._shuffled_controls(llm=None)
    assert trained == [(7, 0, 12), (8, 1, 12)]  # seeds 7 and 8, the same 12 pairs
    assert measured == [
        {"paraphrase": "paraphrase-shuffled-control"},
        {"paraphrase": "paraphrase-shuffled-control-2"},
    ]
    assert [c.model for c in controls] == [
        "paraphrase-shuffled-control",
        "paraphrase-shuffled-control-2",
    ]
    assert detail == (
        "paraphrase: 12 pairs with chosen/rejected shuffled; 2 draws, shuffle seeds 7…8"
    )


async def test_a_failed_draw_keeps_the_draws_before_it_and_says_what_failed(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulation, trained, measured = _simulation(tmp_path, settings_factory, monkeypatch, draws=4)
    controls, detail = await simulation._shuffled_controls(llm=None)
    assert trained == [(7, 0, 12), (8, 1, 12)]  # draw 3 failed; draw 4 never ran
    assert len(controls) == len(measured) == 2
    assert "2 draws, shuffle seeds 7…8" in detail
    assert "draw 3: control failed for paraphrase: out of memory" in detail


async def test_each_draw_leaves_the_model_server_so_the_next_has_room(
    tmp_path: Path, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server holds a few LoRAs (max_loras). A seed-0 run whose three versions were all
    promoted filled it with the first draw and crashed at the second, losing the report."""
    from loopgram.adapter_server import AdapterServerError, HttpAdapterServer

    simulation, _trained, measured = _simulation(tmp_path, settings_factory, monkeypatch, draws=2)
    loaded: set[str] = {"paraphrase-v1", "paraphrase-v2", "paraphrase-v3"}

    def load(self: Any, name: str, path: str) -> None:
        if len(loaded) >= 4:
            raise AdapterServerError("4 adapters are loaded (max_loras); unload one first.")
        loaded.add(name)

    monkeypatch.setattr(HttpAdapterServer, "load", load)
    monkeypatch.setattr(HttpAdapterServer, "unload", lambda self, name: loaded.discard(name))
    controls, _ = await simulation._shuffled_controls(llm=None)
    assert len(controls) == 2 and len(measured) == 2
    assert loaded == {"paraphrase-v1", "paraphrase-v2", "paraphrase-v3"}

    # A server that refuses even one more: the draw is reported missing, nothing crashes.
    loaded.add("someone-else")
    controls, detail = await simulation._shuffled_controls(llm=None)
    assert controls == [] and "control failed for paraphrase: " in detail
    assert "max_loras" in detail


def test_control_draws_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="--control-draws must be 1 or more"):
        SimulationOptions(data_dir=Path("unused"), control_draws=0)
    result = CliRunner().invoke(app, ["simulate", "--control-draws", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_cli_passes_control_draws_to_the_options(tmp_path: Path) -> None:
    from bot.simulation.command import build_options

    options = build_options(
        rounds=1, people=4, assistants="paraphrase", languages="en", passes=1, traffic=0,
        eval_samples=1, max_tokens=16, noise=0.1, seed=0, control=True, data_dir=tmp_path,
        control_draws=3,
    )  # fmt: skip
    assert options.control_draws == 3


def test_simulate_measures_three_control_draws_by_default() -> None:
    """One shuffled control is one draw that drifts with its shuffle (-16 to +20 points over
    eleven draws): the command's default is the mean of three."""
    import inspect

    from loopgram.cli import simulate

    assert inspect.signature(simulate).parameters["control_draws"].default == 3
    assert SimulationOptions(data_dir=Path("unused")).control_draws == 1  # the library's
