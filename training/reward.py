"""Reward models: TRL's `RewardTrainer` on the reward buffer's pairs, their gate, and a scorer.

A reward model is the base model with a one-output sequence-classification head
(`AutoModelForSequenceClassification`, `num_labels=1`) and a LoRA on top; PEFT trains and saves
the head with the adapter (`modules_to_save` of task type SEQ_CLS). It maps (prompt messages,
answer) to a float, read at the last token; only differences between two scores of one model
mean anything (Bradley-Terry: P(a preferred over b) = sigmoid(r(a) - r(b))).

The training rows are TRL's conversational preference rows (the DPO dataset builder's output,
PII-scrubbed, split by question). They are tokenized here with the chat template, and cut from
the left to `max_length` (the reward is read at the end, so the answer and the latest turns are
what must stay), so the trainer and the scorer see exactly the same token sequences.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.resources import releases_memory
from training.trainer import (
    TrainOutcome,
    save_trained,
    start_run,
    train_logging_steps,
    training_arguments,
)

log = logging.getLogger(__name__)

Message = dict[str, str]
META_FILE = "loopgram_reward.json"  # beside the adapter: how its inputs were encoded
SCORE_BATCH = 16


# --- encoding ------------------------------------------------------------------------------


def _pad_token(tokenizer: Any) -> None:
    # As RewardTrainer does: the classifier needs a pad id to find each row's last real token.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_classifier(model_path: Path) -> Any:
    """The base model with a fresh one-output head (`num_labels=1`), fp32, as RewardTrainer
    builds it: the causal LM's `lm_head` unused, the head new (its missing-key report muted)."""
    import contextlib

    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning

        quiet: Any = suppress_seqcls_warning()
    except ImportError:  # a private helper of TRL: only the log line depends on it
        quiet = contextlib.nullcontext()
    with quiet:
        return AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, dtype=torch.float32
        )


def encode(
    tokenizer: Any, prompt: Sequence[Message], answer: str | Message, *, max_length: int
) -> list[int]:
    """Token ids of the conversation prompt + answer, left-truncated to `max_length`."""
    message = answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}
    encoded = tokenizer.apply_chat_template(
        [*(dict(m) for m in prompt), dict(message)], tokenize=True, return_dict=True
    )
    ids = [int(i) for i in encoded["input_ids"]]
    return ids[-max_length:]


def encode_rows(
    tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_length: int
) -> list[dict[str, list[int]]]:
    """TRL conversational preference rows -> RewardTrainer's pre-tokenized rows."""
    return [
        {
            "chosen_ids": encode(tokenizer, row["prompt"], row["chosen"][0], max_length=max_length),
            "rejected_ids": encode(
                tokenizer, row["prompt"], row["rejected"][0], max_length=max_length
            ),
        }
        for row in rows
    ]


# --- training ------------------------------------------------------------------------------


@releases_memory
def train_reward_model(
    config: TrainConfig, rows: list[dict[str, Any]], *, model_path: Path, output_dir: Path
) -> TrainOutcome:
    """One RewardTrainer LoRA run; the folder appears complete at `output_dir` or not at all."""
    import torch
    from datasets import Dataset
    from trl.trainer.reward_config import RewardConfig
    from trl.trainer.reward_trainer import RewardTrainer

    # SEQ_CLS: the score head is trained and saved with the adapter.
    started, tokenizer, peft_config, work = start_run(
        config, model_path=model_path, output_dir=output_dir, task_type="SEQ_CLS"
    )
    torch.manual_seed(config.seed)  # the new head's initialisation
    model = load_classifier(model_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        **training_arguments(config, work),
        gradient_checkpointing=False,  # compute, not memory, is the bottleneck at these sizes
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(encode_rows(tokenizer, rows, max_length=config.max_length)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    train_logging_steps(trainer)
    meta = {"max_length": config.max_length, "base_model": str(model_path), "method": "reward"}
    outcome = save_trained(
        trainer, tokenizer, work, output_dir, started, {META_FILE: json.dumps(meta)}
    )
    log.info(
        "reward.trained examples=%s steps=%s seconds=%.1f",
        len(rows),
        outcome.steps,
        outcome.seconds,
    )
    return outcome


# --- held-out score and gate ---------------------------------------------------------------


@dataclass(frozen=True)
class RewardScore:
    """A reward model on held-out pairs: the share with r(chosen) > r(rejected) (ties half),
    the mean r(chosen) - r(rejected), and the Bradley-Terry loss mean(-log sigmoid(margin))."""

    accuracy: float
    mean_margin: float
    loss: float
    pairs: int

    def as_dict(self) -> dict[str, float]:
        return {
            "accuracy": round(self.accuracy, 4),
            "mean_margin": round(self.mean_margin, 4),
            "loss": round(self.loss, 4),
            "pairs": self.pairs,
        }


def pairwise_score(margins: Sequence[float]) -> RewardScore:
    if not margins:
        return RewardScore(0.5, 0.0, math.log(2), 0)
    wins = sum(1.0 if m > 1e-6 else 0.5 if abs(m) <= 1e-6 else 0.0 for m in margins)
    # -log sigmoid(m) = softplus(-m), written to stay finite for large |m|.
    loss = sum(max(-m, 0.0) + math.log1p(math.exp(-abs(m))) for m in margins)
    return RewardScore(
        wins / len(margins), sum(margins) / len(margins), loss / len(margins), len(margins)
    )


@dataclass(frozen=True)
class RewardGate:
    candidate: RewardScore
    active: RewardScore | None
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.as_dict(),
            # {} when there is no active reward model (readers do `.get` on it).
            "active": self.active.as_dict() if self.active is not None else {},
            "passed": self.passed,
            "reason": self.reason,
        }


def reward_gate(
    candidate: RewardScore, active: RewardScore | None, *, min_accuracy: float
) -> RewardGate:
    """A reward model is used only if it ranks held-out pairs clearly better than chance and
    better than the active reward model on the same pairs.

    "Better" is a higher pairwise accuracy; at equal accuracy (common on a small held-out set,
    e.g. both 1.0) a lower Bradley-Terry loss: the pairs are the same, so the one that is more
    confident where it is right and less where it is wrong wins. Raw margins are not compared:
    each model's reward scale is its own.
    """
    if candidate.pairs == 0:
        return RewardGate(candidate, active, False, "no held-out pairs to judge on")
    if candidate.accuracy < min_accuracy or candidate.accuracy <= 0.5:
        return RewardGate(
            candidate,
            active,
            False,
            f"held-out accuracy {candidate.accuracy:.2f} on {candidate.pairs} pairs is not far "
            f"enough above chance (0.50; needs {min_accuracy:.2f})",
        )
    if active is None:
        return RewardGate(
            candidate,
            None,
            True,
            f"held-out accuracy {candidate.accuracy:.2f} on {candidate.pairs} pairs "
            f"(no active reward model)",
        )
    tie = abs(candidate.accuracy - active.accuracy) < 1e-9
    if candidate.accuracy > active.accuracy + 1e-9 or (tie and candidate.loss < active.loss):
        return RewardGate(
            candidate,
            active,
            True,
            f"accuracy {candidate.accuracy:.2f} vs {active.accuracy:.2f}, "
            f"loss {candidate.loss:.3f} vs {active.loss:.3f}",
        )
    return RewardGate(
        candidate,
        active,
        False,
        f"does not beat the active reward model (accuracy {candidate.accuracy:.2f} vs "
        f"{active.accuracy:.2f}, loss {candidate.loss:.3f} vs {active.loss:.3f})",
    )


# --- scoring -------------------------------------------------------------------------------


class RewardScorer:
    """One sequence-classification base model on CPU; reward-model adapters attached by name
    (each with its own head), switched per call. Thread-safe: one call scores at a time."""

    def __init__(self, base_model: Path, *, max_adapters: int = 4) -> None:
        import torch
        from transformers import AutoTokenizer

        self.torch = torch
        self.base_model = Path(base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(base_model)
        _pad_token(self.tokenizer)
        # The base head is random and never used: every adapter brings its own trained copy.
        torch.manual_seed(0)
        self.model: Any = load_classifier(self.base_model)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.train(False)
        self.max_adapters = max_adapters
        self._adapters: OrderedDict[str, int] = OrderedDict()  # name -> max_length, LRU order
        self._lock = threading.RLock()

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def add(self, name: str, path: Path) -> None:
        """Attach a reward model under `name` (nothing happens if it is attached already)."""
        from peft import PeftModel

        with self._lock:
            if name in self._adapters:
                self._adapters.move_to_end(name)
                return
            meta_file = Path(path) / META_FILE
            meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            else:
                self.model.load_adapter(str(path), adapter_name=name)
            self.model.train(False)
            self._adapters[name] = int(meta.get("max_length", 512))
            while len(self._adapters) > self.max_adapters:
                oldest, _ = self._adapters.popitem(last=False)
                self.model.delete_adapter(oldest)
            log.info("reward.loaded name=%s path=%s", name, path)

    def score(
        self, name: str, items: Sequence[tuple[Sequence[Message], str | Message]]
    ) -> list[float]:
        """The reward of each (prompt messages, answer), in order; batched, no gradients."""
        torch = self.torch
        if not items:
            return []
        with self._lock:
            if name not in self._adapters:
                raise KeyError(f"reward model {name!r} is not loaded")
            self._adapters.move_to_end(name)
            max_length = self._adapters[name]
            encoded = [encode(self.tokenizer, p, a, max_length=max_length) for p, a in items]
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
            scores = [0.0] * len(encoded)
            pad_id = int(self.tokenizer.pad_token_id)
            self.model.set_adapter(name)
            for start in range(0, len(order), SCORE_BATCH):
                batch = order[start : start + SCORE_BATCH]
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):  # right padding, as TRL's collator
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                with torch.no_grad():
                    logits = self.model(input_ids=ids, attention_mask=mask).logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0])
            return scores

    def evaluate(self, name: str, rows: Sequence[dict[str, Any]]) -> RewardScore:
        """Pairwise accuracy, mean margin and loss on TRL conversational preference rows."""
        items: list[tuple[Sequence[Message], Message]] = []
        for row in rows:
            items.append((row["prompt"], row["chosen"][0]))
            items.append((row["prompt"], row["rejected"][0]))
        scores = self.score(name, items)
        return pairwise_score([scores[i] - scores[i + 1] for i in range(0, len(scores), 2)])


_SCORERS: OrderedDict[str, RewardScorer] = OrderedDict()
_SCORERS_LOCK = threading.Lock()
MAX_BASE_MODELS = 2


def scorer_for(base_model: Path) -> RewardScorer:
    """The cached scorer of a base model (built on first use; at most MAX_BASE_MODELS kept)."""
    key = str(Path(base_model).resolve())
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            scorer = RewardScorer(Path(key))
            _SCORERS[key] = scorer
            while len(_SCORERS) > MAX_BASE_MODELS:
                _SCORERS.popitem(last=False)
        _SCORERS.move_to_end(key)
        return scorer


def clear_cache() -> None:
    with _SCORERS_LOCK:
        _SCORERS.clear()


@dataclass(frozen=True)
class ActiveRewardModel:
    """An assistant's active reward model, loaded: `score(prompt, answers)` -> floats."""

    name: str
    scorer: RewardScorer

    def score(self, prompt: Sequence[Message], answers: Sequence[str]) -> list[float]:
        return self.scorer.score(self.name, [(prompt, answer) for answer in answers])

    def best(self, prompt: Sequence[Message], answers: Sequence[str]) -> int:
        """Index of the highest-scored answer (the first one on a tie)."""
        scores = self.score(prompt, answers)
        return max(range(len(scores)), key=lambda i: (scores[i], -i))


def load_active(db: Any, assistant: str) -> ActiveRewardModel | None:
    """The active reward model of `assistant` from the registry, loaded through the cache;
    None when there is none yet. `db` is a `loopgram.db.Database`."""
    from loopgram import adapters

    def lookup(*, session: Any) -> tuple[str, str, str] | None:
        found = adapters.active_reward_model(session=session, assistant=assistant)
        return None if found is None else (found.name, found.path, found.base_model)

    row = db.call(lookup)
    if row is None:
        return None
    name, path, base_model = row
    scorer = scorer_for(Path(base_model))
    scorer.add(name, Path(path))
    return ActiveRewardModel(name, scorer)
