"""The `loopgram simulate` and `loopgram demo` commands: options in, report out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bot.simulation.options import SimulationOptions, default_train_settings
from bot.simulation.people import Behaviour
from bot.simulation.preferences import JUDGES
from bot.simulation.prompts import LANGUAGES, PromptSetError
from bot.simulation.report import write_report
from bot.simulation.results import SimulationResult
from bot.simulation.runner import Simulation
from loopgram.errors import LoopgramError


class SimulationInputError(ValueError):
    pass


def _names(raw: str, allowed: Any, what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in names if name not in allowed]
    if not names or unknown:
        raise SimulationInputError(
            f"{what} must be a comma-separated list of {', '.join(sorted(allowed))}; got {raw!r}"
        )
    return names


def build_options(
    *,
    rounds: int,
    people: int,
    assistants: str,
    languages: str,
    passes: int,
    traffic: int,
    eval_samples: int,
    max_tokens: int,
    noise: float,
    seed: int,
    control: bool,
    data_dir: Path,
    moderators: int = 1,
    correct_share: float = 0.5,
    canary_ratings: int = SimulationOptions.canary_max_ratings,
    train_config: Path | None = None,
    method: str | None = None,
    best_of_n: int = 1,
    reward_pairs: bool = False,
    measure_discarded: bool = False,
    control_draws: int = 1,
) -> SimulationOptions:
    """The options of one run. `method` and `reward_pairs` go over `train_config`'s; the
    options are checked together (SimulationOptions), so a bad mix is one clear error."""
    chosen_languages = _names(languages, LANGUAGES, "--languages")
    if people < 2 * len(chosen_languages):
        raise SimulationInputError("--people must give every language at least two people")
    train = default_train_settings()
    if train_config is not None:
        train = train_options(train_config)
    if method is not None:
        train["method"] = method.strip().lower()
    if reward_pairs:
        train["reward_pairs"] = True
    try:
        return SimulationOptions(
            data_dir=data_dir,
            assistants=_names(assistants, JUDGES, "--assistants"),
            languages=chosen_languages,
            rounds=rounds,
            people=people,
            passes=passes,
            traffic=traffic,
            eval_samples=eval_samples,
            max_tokens=max_tokens,
            behaviour=Behaviour(noise=noise),
            seed=seed,
            shuffled_control=control,
            control_draws=control_draws,
            moderators=moderators,
            correct_share=correct_share,
            canary_max_ratings=canary_ratings,
            best_of_n=best_of_n,
            measure_discarded=measure_discarded,
            train=train,
        )
    except ValueError as exc:
        raise SimulationInputError(str(exc)) from exc


def train_options(path: Path) -> dict[str, Any]:
    """The simulation's training options with `path`'s (a YAML mapping of TrainConfig fields,
    as TRAIN_CONFIG takes) on top."""
    from training.config import TrainConfig

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SimulationInputError(f"cannot read --train-config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SimulationInputError(f"--train-config {path} must be a YAML mapping of options")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise SimulationInputError(f"--train-config {path}: unknown options {unknown}")
    merged = {**SimulationOptions(data_dir=path.parent).train, **data}
    try:
        TrainConfig(**merged)
    except (TypeError, ValueError) as exc:
        raise SimulationInputError(f"--train-config {path}: {exc}") from exc
    return merged


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_simulation(
    options: SimulationOptions, *, out: Path, quiet: bool
) -> tuple[SimulationResult, dict[str, Path]]:
    console = Console(stderr=True, quiet=quiet, highlight=False)
    started = time.monotonic()

    def progress(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] {message}")

    simulation = Simulation(options, progress=progress)
    root = logging.getLogger()
    level = root.level
    # `kill` stops it like Ctrl-C: the stack shuts down (training worker included).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # The progress lines tell the story; per-request logs and bars would bury them.
    root.setLevel(max(level, logging.WARNING))
    _hide_progress_bars()
    try:
        # Libraries may print to stdout; with --json it carries one document only.
        with contextlib.redirect_stdout(sys.stderr):
            result = asyncio.run(simulation.run())
    finally:
        root.setLevel(level)
        signal.signal(signal.SIGTERM, previous)
    return result, write_report(result, out)


def _hide_progress_bars() -> None:
    """Model loading and dataset bars of the in-process model server and control training."""
    with contextlib.suppress(ImportError):  # without the ml extra there are none
        from datasets import disable_progress_bars
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()  # type: ignore[no-untyped-call]
        disable_progress_bars()


def _run_reporting_errors(
    options: SimulationOptions, out: Path
) -> tuple[SimulationResult, dict[str, Path]] | int:
    """The run, or an exit code after one clear line on stderr."""
    try:
        return run_simulation(options, out=out, quiet=False)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except LoopgramError as exc:  # the model server failed the held-out evaluation
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"error: the simulated deployment stalled: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot use {options.data_dir} or {out}: {exc}", file=sys.stderr)
        return 2


def run_simulation_command(*, out: Path, as_json: bool, **raw: Any) -> int:
    try:
        options = build_options(**raw)
    except (SimulationInputError, PromptSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcome = _run_reporting_errors(options, out)
    if isinstance(outcome, int):
        return outcome
    _print_result(*outcome, as_json=as_json)
    return 0


def _print_result(result: SimulationResult, paths: dict[str, Path], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return
    print(paths["markdown"].read_text("utf-8"))
    print(f"chart: {paths['png']}  report: {paths['html']}")
    print(result.summary())
    print(result.options_line())
    print(result.cost_line())


DEMO_ROUNDS = 1
DEMO_CANARY_RATINGS = 12
DEMO_EPOCHS = 1.0
"""One pass over the round's ~20-35 pairs (the simulation makes two): each DPO step of 8 pairs
takes ~20 s on 2 cores, and the demo trains twice (the candidate and the control)."""


def demo_options(data_dir: Path) -> SimulationOptions:
    """The short simulation `loopgram demo` runs: one round of the whole loop (traffic,
    moderators, a scheduled DPO run, the gate, a short canary, the held-out measurement and
    the shuffled control), several minutes on 2 CPU cores. `loopgram simulate` runs more."""
    return SimulationOptions(
        data_dir=data_dir,
        rounds=DEMO_ROUNDS,
        people=8,
        passes=1,
        eval_samples=3,
        # A short canary: judged once, on 12 live ratings (production waits for 50–400).
        # Each batch of canary traffic takes ~10-20 s here. At 12 ratings a side
        # the 95% interval of the difference is about ±0.37 wide, so non-inferiority within
        # production's 0.05–0.1 cannot be shown and every canary would run to the cap and be
        # rolled back; the demo's canary only rolls back a clear drop (worse by 0.3).
        canary_min_ratings=DEMO_CANARY_RATINGS,
        canary_max_ratings=DEMO_CANARY_RATINGS,
        canary_margin=0.3,
        train={**default_train_settings(), "epochs": DEMO_EPOCHS},
    )


def run_demo_command(*, data_dir: Path, out: Path, as_json: bool) -> int:
    outcome = _run_reporting_errors(demo_options(data_dir), out)
    if isinstance(outcome, int):
        return outcome
    _print_result(*outcome, as_json=as_json)
    return 0
