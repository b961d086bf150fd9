"""Training configuration: a dataclass with help text, loadable from YAML (TRL-script style)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from loopgram.settings import Settings

# dpo and orpo learn from pairs, kto from unpaired thumbs; "reward" trains a reward model
# (TRL RewardTrainer) instead of a policy adapter.
METHODS = ("dpo", "orpo", "kto", "reward")
GATE_RULES = ("not-worse", "better")
KTO_MIN_PASS = 4
"""KTO's KL reference point is the mean over mismatched answers within one forward pass."""


@dataclass
class TrainConfig:
    assistant: str = field(default="chat", metadata={"help": "which assistant's feedback to learn"})
    method: str = field(
        default="dpo",
        metadata={
            "help": "dpo (pairs), orpo (pairs, no reference model), kto (unpaired thumbs) or "
            "reward (a reward model from pairs)"
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO/KTO temperature: how far from base; for ORPO its lambda, the weight of "
            "the odds-ratio term against the chosen answers' NLL (same default and range). Also "
            "scales the gate's held-out margins"
        },
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "constant LR of the LoRA weights"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training split"})
    sft_weight: float = field(
        default=0.0,
        metadata={
            "help": "DPO only: weight of an NLL term on the chosen answers added to the DPO loss"
            " (RPO; TRL loss_type ['sigmoid', 'sft']); 0 = plain DPO"
        },
    )
    precompute_ref: bool = field(
        default=False,
        metadata={"help": "DPO only: reference log-probs computed once before training"},
    )
    batch_size: int = field(default=8, metadata={"help": "examples per optimiser step"})
    micro_batch_size: int = field(
        default=2,
        metadata={
            "help": "examples per forward pass; gradients add up over passes to batch_size. "
            "Activation memory grows with this, not with batch_size (KTO takes at least 4: "
            "its KL reference point is estimated within a pass)"
        },
    )
    max_length: int = field(default=256, metadata={"help": "prompt + answer tokens kept"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: str = field(default="all-linear", metadata={"help": "layers that get LoRA"})
    eval_fraction: float = field(default=0.2, metadata={"help": "held-out share for the gate"})
    min_examples: int = field(default=8, metadata={"help": "fewer training examples: no run"})
    max_examples: int = field(default=20_000, metadata={"help": "newest examples kept at most"})
    whole_buffer: bool = field(
        default=True,
        metadata={
            "help": "train a fresh adapter on every pair so far (newest max_examples), not only "
            "on what arrived since the last run: a new adapter must not forget earlier feedback"
        },
    )
    reward_pairs: bool = field(
        default=False,
        metadata={
            "help": "policy runs only: train on best-of-n pairs the reward model labelled too "
            "(machine labels, weight 0.5); a reward model never trains on them"
        },
    )
    gate_rule: str = field(
        default="not-worse",
        metadata={
            "help": "the offline gate on held-out pairs. not-worse: reject only a candidate the "
            "pairs show to be worse than the active adapter (exact sign test at gate_alpha) or "
            "that ties the base model on every pair, and let the canary decide on live ratings; "
            "better: deploy only a higher held-out accuracy (gain above gate_margin) with a "
            "positive mean margin"
        },
    )
    gate_alpha: float = field(
        default=0.05,
        metadata={"help": "significance of the sign tests (gate and task check) that reject"},
    )
    gate_margin: float = field(
        default=0.0,
        metadata={
            "help": "better rule: held-out preference accuracy the candidate must gain over the "
            "active adapter (0: any gain, or equal accuracy with a larger mean reward margin)"
        },
    )
    reward_min_accuracy: float = field(
        default=0.55,
        metadata={
            "help": "reward only: held-out pairwise accuracy a reward model needs (chance is 0.5) "
            "before it can replace the active one"
        },
    )
    judge_samples: int = field(
        default=16, metadata={"help": "held-out prompts the LLM judge compares; 0 = no judge"}
    )
    judge_min_win_rate: float = field(
        default=0.5,
        metadata={
            "help": "judge win rate the candidate needs over the active one; under gate_rule "
            "not-worse a lower rate rejects only if the candidate also loses significantly "
            "more comparisons than it wins (sign test at gate_alpha)"
        },
    )
    judge_max_tokens: int = field(default=96, metadata={"help": "answer length for the judge"})
    reward_min_win_rate: float = field(
        default=0.0,
        metadata={
            "help": "win rate over the active adapter's answers that the assistant's active reward "
            "model must give the candidate on the judge's held-out prompts; 0 = reported only, "
            "never blocks (a young reward model trained on the same pairs should not veto alone)"
        },
    )
    task_eval_items: int = field(
        default=8,
        metadata={
            "help": "items of the assistant's evaluation set the gate answers with the candidate "
            "and the active adapter (loopgram eval's metrics); 0 = no task check"
        },
    )
    task_max_tokens: int = field(
        default=160, metadata={"help": "answer length cap in the task check"}
    )
    task_max_rewrite_length: float = field(
        default=2.0,  # loopgram.evaluation.metrics.MAX_REWRITE_LENGTH (a test keeps them equal)
        metadata={
            "help": "paraphrase task check: the longest rewrite, in times its source's length, "
            "that counts as ok (0.5-10); 1 when people want rewrites no longer than the source"
        },
    )
    task_eval_margin: float = field(
        default=0.05,
        metadata={"help": "how far below the active adapter's task metric a candidate may fall"},
    )
    memory_budget_gb: float = field(
        default=0.0, metadata={"help": "refuse above this estimate; 0 = 75% of free memory"}
    )
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = all cores"})
    seed: int = field(default=42, metadata={"help": "data split and initialisation seed"})
    progress: bool = field(default=False, metadata={"help": "progress bar on stderr"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError("eval_fraction must be between 0 and 1")
        if not 0.5 <= self.reward_min_accuracy <= 1:
            raise ValueError("reward_min_accuracy must be between 0.5 (chance) and 1")
        if not 0 <= self.reward_min_win_rate <= 1:
            raise ValueError("reward_min_win_rate must be between 0 (reported only) and 1")
        if self.gate_rule not in GATE_RULES:
            raise ValueError(f"gate_rule must be one of {', '.join(GATE_RULES)}")
        if not 0 < self.gate_alpha < 1:
            raise ValueError("gate_alpha must be between 0 and 1")
        from loopgram.evaluation.metrics import check_rewrite_length  # eval's range, one place

        try:
            check_rewrite_length(self.task_max_rewrite_length)
        except ValueError as exc:
            raise ValueError(f"task_max_rewrite_length: {exc}") from exc
        if self.sft_weight < 0:
            raise ValueError("sft_weight must not be negative")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("batch_size and micro_batch_size must be at least 1")

    def passes(self) -> tuple[int, int]:
        """(examples per forward pass, passes per optimiser step). The pass size is the
        largest divisor of batch_size not above micro_batch_size, so that every optimiser
        step still averages exactly batch_size examples, as one big batch would."""
        floor = KTO_MIN_PASS if self.method == "kto" else 1
        cap = min(self.batch_size, max(self.micro_batch_size, floor))
        size = next(n for n in range(cap, 0, -1) if self.batch_size % n == 0)
        return size, self.batch_size // size

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Raises ValueError (one line) for a file that is not YAML, not a mapping of known
        options, or gives an option a value of the wrong type (caught here, not hours into a
        run, nor as a TypeError from a comparison in `__post_init__`)."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
        if not isinstance(data, dict):
            raise ValueError(
                f"{path} must map option names to values, not be a {type(data).__name__}"
            )
        kinds = {f.name: str(f.type) for f in fields(cls)}
        unknown = set(data) - set(kinds)
        if unknown:
            raise ValueError(f"unknown training options in {path}: {sorted(map(str, unknown))}")
        for name, value in data.items():
            allowed = _OPTION_TYPES.get(kinds[name], (object,))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ValueError(f"{name} in {path} must be {kinds[name]}, not {value!r}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The values a YAML file may give an option of each annotated type (an int is a float).
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, on one line (PyYAML's message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return (
        problem if mark is None else f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    )


def train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    """The options of a scheduled run: TRAIN_CONFIG's YAML when set, with `overrides` on top."""
    path = settings.learning.train_config
    if path is None:
        return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_yaml(Path(path), **overrides)
