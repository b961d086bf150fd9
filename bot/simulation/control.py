"""The shuffled-ratings control: the same data and training, with the preferences scrambled.

Each pair the real run trained on (the run of the adapter served at the end, read back just
before that run started, so later canary traffic is not in it) has its chosen and rejected
answers swapped
with probability one half (DPO, ORPO), or the 👍/👎 labels of the thumbs are dealt out again
at random (KTO), so the answers, prompts and amount of data stay the same and only the link
between an answer and the people's verdict is broken. A gain that survives this would come
from training itself (more data, a format), not from the feedback. A run that answers
best-of-n gets a control reward model trained the same way, so that the control's best-of-n
picks without any preference learned either.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopgram.db import Database
from loopgram.settings import Settings
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.trainer import TrainOutcome


def shuffled_what(method: str) -> str:
    """How the control's examples were scrambled, for the report."""
    if method == "kto":
        return "answers with their 👍/👎 labels dealt out at random"
    return "pairs with chosen/rejected shuffled"


def shuffled_labels(rows: list[dict[str, Any]], *, seed: int) -> list[dict[str, Any]]:
    """KTO rows with the same labels (as many 👍 and 👎) on randomly chosen answers."""
    labels = [row["label"] for row in rows]
    random.Random(seed).shuffle(labels)
    return [{**row, "label": label} for row, label in zip(rows, labels, strict=True)]


def shuffled_rows(rows: list[dict[str, Any]], *, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    shuffled = []
    for row in rows:
        if rng.random() < 0.5:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
        shuffled.append(row)
    return shuffled


def training_rows(config: TrainConfig, db: Database) -> list[dict[str, Any]]:
    """The rows a run with `config` would train on now (its held-out share left out)."""
    from training.pipeline import dataset_for

    train_rows, _eval_rows, _ids = db.call(dataset_for, config=config)
    return train_rows


def control_name(assistant: str, kind: str, draw: int) -> str:
    """`paraphrase-shuffled-control` for the first draw, `...-control-2` for the second, ..."""
    return f"{assistant}-{kind}-control" + (f"-{draw + 1}" if draw else "")


def train_shuffled_control(
    settings: Settings,
    config: TrainConfig,
    rows: list[dict[str, Any]],
    *,
    seed: int,
    draw: int = 0,
) -> tuple[Path, int]:
    """Train the control adapter with `config`'s method on `rows` scrambled with `seed`;
    returns its folder (one per `draw`) and the number of examples (pairs, or thumbs for KTO)
    it saw."""
    from training.trainer import train_adapter

    return _train_shuffled(
        settings,
        config,
        rows,
        seed=seed,
        name=control_name(config.assistant, "shuffled", draw),
        train=train_adapter,
    )


def train_shuffled_reward_model(
    settings: Settings,
    config: TrainConfig,
    rows: list[dict[str, Any]],
    *,
    seed: int,
    draw: int = 0,
) -> tuple[Path, int]:
    """The control's reward model, for runs that answer best-of-n: trained like the real
    ones (`config` has method `reward`) on the same pairs with chosen/rejected shuffled, so
    that the control's best-of-n picks by a reward model that learned no preference."""
    from training.reward import train_reward_model

    return _train_shuffled(
        settings,
        config,
        rows,
        seed=seed,
        name=control_name(config.assistant, "rm-shuffled", draw),
        train=train_reward_model,
    )


def _train_shuffled(
    settings: Settings,
    config: TrainConfig,
    train_rows: list[dict[str, Any]],
    *,
    seed: int,
    name: str,
    train: Callable[..., TrainOutcome],
) -> tuple[Path, int]:
    from training.pipeline import resolve_model_path

    if len(train_rows) < config.min_examples:
        raise ValueError(
            f"{len(train_rows)} examples to train on, fewer than {config.min_examples}"
        )
    if config.method == "kto":
        rows = shuffled_labels(train_rows, seed=seed)
    else:
        rows = shuffled_rows(train_rows, seed=seed)
    output = Path(settings.learning.adapters_dir).resolve() / config.assistant / name
    outcome = train(config, rows, model_path=resolve_model_path(settings), output_dir=output)
    return outcome.adapter_path, len(rows)
