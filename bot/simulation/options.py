"""The options of `loopgram simulate` and what its policy runs train with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.simulation.people import Behaviour

POLICY_METHODS = ("dpo", "orpo", "kto")
MAX_BEST_OF_N = 8  # BEST_OF_N's own bound (loopgram.settings.RewardSettings)


def default_train_settings() -> dict[str, Any]:
    """What the simulation's policy runs train with (its TRAIN_CONFIG; `--train-config` and
    `--method` go on top)."""
    return {
        "epochs": 2.0,
        "batch_size": 8,
        # System prompt + one few-shot example + source + answer: ~200-400 tokens.
        "max_length": 448,
        "learning_rate": 2e-4,
        "judge_samples": 0,
        # The task check would answer 2x8 evaluation items per run on CPU (minutes); the
        # simulation measures the held-out 👍 rate instead.
        "task_eval_items": 0,
        "min_examples": 8,
        # The newest pairs only: on 2 CPU cores a step of 8 pairs takes 16–40 s, and the
        # whole buffer grows by ~100 pairs a round.
        "max_examples": 96,
    }


@dataclass(frozen=True)
class SimulationOptions:
    data_dir: Path
    assistants: tuple[str, ...] = ("paraphrase",)
    languages: tuple[str, ...] = ("en",)
    rounds: int = 3
    people: int = 16
    passes: int = 2
    """Times each traffic prompt is asked per round (by different people)."""
    traffic: int = 0
    """Prompts per round at most (0 = every traffic prompt `passes` times)."""
    eval_samples: int = 4
    """Answers sampled per held-out prompt for each measured model."""
    max_tokens: int = 64
    concurrency: int = 16
    """Held-out answers in flight at once: the built-in server batches up to 16 requests."""
    behaviour: Behaviour = field(default_factory=Behaviour)
    seed: int = 0
    shuffled_control: bool = True
    control_draws: int = 1
    """Shuffled controls trained and measured, each on its own shuffle of the same data
    (seeds `seed`, `seed + 1`, ...): one shuffle is one draw of a control that itself varies."""
    measure_discarded: bool = False
    """After the rounds, measure every candidate the gate rejected or the canary rolled back on
    the same held-out items: did the loop throw a gain away?"""
    # Simulated moderators work the review queue each round (flagged by people's 👎);
    # they correct this share of the disliked answers they can fix and reject the rest.
    moderators: int = 1
    correct_share: float = 0.5
    reviews_per_round: int = 16
    canary_share: float = 0.5
    canary_min_ratings: int = 20
    canary_max_ratings: int = 80
    canary_margin: float = 0.1
    train: dict[str, Any] = field(default_factory=default_train_settings)
    round_timeout: float = 3600.0
    best_of_n: int = 1
    """Candidates per answer the bot generates for the reward model to pick from (1 = off)."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.people < 2 or self.passes < 1 or self.eval_samples < 1:
            raise ValueError("rounds ≥ 1, people ≥ 2, passes ≥ 1 and eval samples ≥ 1")
        if self.control_draws < 1:
            raise ValueError(f"--control-draws must be 1 or more, not {self.control_draws}")
        if self.method not in POLICY_METHODS:
            raise ValueError(
                f"--method (or method: in --train-config) must be one of "
                f"{', '.join(POLICY_METHODS)}, not {self.method!r}"
            )
        if self.canary_max_ratings < self.canary_min_ratings:
            raise ValueError(
                f"--canary-ratings must be at least {self.canary_min_ratings}, the ratings a "
                f"canary is first judged on, not {self.canary_max_ratings}"
            )
        if not 1 <= self.best_of_n <= MAX_BEST_OF_N:
            raise ValueError(
                f"--best-of-n must be 1 (off) to {MAX_BEST_OF_N} candidates, not {self.best_of_n}"
            )
        if self.reward_pairs and self.best_of_n < 2:
            raise ValueError(
                "--reward-pairs needs --best-of-n 2 or more: the extra pairs are best-of-n "
                "candidates the reward model ranked"
            )

    @property
    def method(self) -> str:
        return str(self.train.get("method", "dpo"))

    @property
    def reward_pairs(self) -> bool:
        return bool(self.train.get("reward_pairs", False))

    @property
    def trains_reward_model(self) -> bool:
        return self.best_of_n > 1 or self.reward_pairs
