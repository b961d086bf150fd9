"""Held-out preference evaluation: does an adapter prefer what people preferred?

For each held-out pair the implicit DPO reward margin of a policy is
beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))]
with the base model (adapter disabled) as reference. Preference accuracy is the share of
pairs with a positive margin, ties counting half, so the base model itself scores 0.5.
The gate compares a candidate with the active adapter on the same pairs.

The same measure judges ORPO adapters, though ORPO trains without a reference: the margin
only asks whether the adapter moved probability towards the answer people chose and away
from the one they rejected, relative to the base model, whatever loss moved it. So DPO and
ORPO candidates (and an active adapter trained by either) are compared on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopgram.stats import sign_test
from training.config import GATE_RULES

TIE = 1e-9  # |margin| at most this: the adapter did not move either way (the base model's 0.5)


@dataclass(frozen=True)
class PreferenceScore:
    accuracy: float
    mean_margin: float
    pairs: int
    # Per held-out pair, in order: 1.0 right (positive margin), 0.0 wrong, 0.5 a tie. The gate
    # compares two adapters pair by pair on these.
    outcomes: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "mean_margin": self.mean_margin, "pairs": self.pairs}


@dataclass(frozen=True)
class GateResult:
    candidate: PreferenceScore
    active: PreferenceScore
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.as_dict(),
            "active": self.active.as_dict(),
            "passed": self.passed,
            "reason": self.reason,
            "evidence": self.evidence,
        }


class PolicyScorer:
    """One base model in memory; adapters attached by name and switched per scoring pass."""

    def __init__(self, model_path: Path, *, beta: float = 0.1) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.beta = beta
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.train(False)
        self._adapters: set[str] = set()
        self._ref_cache: dict[tuple[str, str], float] = {}

    def add_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if not self._adapters:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        else:
            self.model.load_adapter(str(path), adapter_name=name)
        self.model.train(False)
        self._adapters.add(name)

    def _logp(self, prompt: list[dict[str, str]], completion: str) -> float:
        torch = self.torch
        prefix = str(
            self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        )
        prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        full_ids = self.tokenizer(prefix + completion, add_special_tokens=False)["input_ids"]
        if len(full_ids) <= len(prefix_ids):
            return 0.0
        ids = torch.tensor([full_ids])
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, :-1]
        logps = torch.log_softmax(logits.float(), dim=-1)
        targets = ids[0, 1:]
        picked = logps.gather(1, targets.unsqueeze(1)).squeeze(1)
        return float(picked[len(prefix_ids) - 1 :].sum())

    def _policy_logp(self, adapter: str | None, prompt: list[dict[str, str]], text: str) -> float:
        if adapter is None or not self._adapters:
            return self._ref_logp(prompt, text)
        self.model.set_adapter(adapter)
        return self._logp(prompt, text)

    def _ref_logp(self, prompt: list[dict[str, str]], text: str) -> float:
        key = (repr(prompt), text)
        if key not in self._ref_cache:
            if self._adapters:
                with self.model.disable_adapter():
                    self._ref_cache[key] = self._logp(prompt, text)
            else:
                self._ref_cache[key] = self._logp(prompt, text)
        return self._ref_cache[key]

    def generate(self, adapter: str | None, prompt: list[dict[str, str]], max_tokens: int) -> str:
        """A greedy answer from the base model or an adapter (for the judge)."""
        torch = self.torch
        text = str(
            self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        )
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": False,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        with torch.no_grad():
            if adapter is None and self._adapters:
                with self.model.disable_adapter():
                    output = self.model.generate(input_ids=ids, **kwargs)
            else:
                if adapter is not None:
                    self.model.set_adapter(adapter)
                output = self.model.generate(input_ids=ids, **kwargs)
        return str(self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))

    def score_pairs(self, adapter: str | None, rows: list[dict[str, Any]]) -> PreferenceScore:
        """`rows` in TRL's conversational DPO format."""
        margins: list[float] = []
        for row in rows:
            prompt = row["prompt"]
            chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
            margin = self.beta * (
                (self._policy_logp(adapter, prompt, chosen) - self._ref_logp(prompt, chosen))
                - (self._policy_logp(adapter, prompt, rejected) - self._ref_logp(prompt, rejected))
            )
            margins.append(margin)
        return _score(margins)

    def score_thumbs(self, adapter: str | None, rows: list[dict[str, Any]]) -> PreferenceScore:
        """`rows` in TRL's KTO format: the implicit reward's sign should match the label."""
        margins: list[float] = []
        for row in rows:
            prompt, text = row["prompt"], row["completion"][0]["content"]
            reward = self.beta * (
                self._policy_logp(adapter, prompt, text) - self._ref_logp(prompt, text)
            )
            margins.append(reward if row["label"] else -reward)
        return _score(margins)


def _score(margins: list[float]) -> PreferenceScore:
    if not margins:
        return PreferenceScore(0.5, 0.0, 0)
    outcomes = tuple(1.0 if m > TIE else 0.5 if abs(m) <= TIE else 0.0 for m in margins)
    return PreferenceScore(
        sum(outcomes) / len(margins), sum(margins) / len(margins), len(margins), outcomes
    )


def gate(
    candidate: PreferenceScore,
    active: PreferenceScore,
    *,
    margin: float,
    rule: str = "not-worse",
    alpha: float = 0.05,
) -> GateResult:
    """The offline gate on held-out preferences; `rule` picks how much evidence it asks for.

    "not-worse" (the default) stops only what the held-out pairs show to be bad, and leaves the
    rest to the canary, which decides on live ratings. A run holds out a dozen or two pairs,
    on which one pair moves accuracy by 0.05: in the simulations the point rule below rejected
    candidates that measured +0.39 and +0.50 over the base model afterwards, and passed one
    the canary rightly rolled back. Compared pair by pair with the active adapter (the base
    model ties every pair, so against it this is the candidate's own right and wrong pairs),
    the candidate is rejected when
    - it gets fewer pairs right than the active adapter, by more than chance explains
      (one-sided exact sign test on the pairs where they differ, at `alpha`): a run with
      flipped labels loses nearly all of them;
    - or it ties the base model on every pair (zero margins): it learnt nothing to deploy.
    Agreeing with the active adapter on every pair is no evidence against a candidate: the
    signs of a dozen margins say little of how two adapters answer (seed 0's round 2 agreed on
    13 of 13 pairs, with mean margins of -0.39 and -0.05).
    Its own accuracy against the base model does not decide once an adapter is live: the
    rejected answers of later pairs are mostly the live adapter's own, which any adapter
    trained on similar pairs rates up. A simulated candidate right on 5 pairs and wrong on 14
    (the active adapter: 8 and 11) measured +0.08 over that adapter afterwards.
    """
    if rule not in GATE_RULES:
        raise ValueError(f"gate rule must be one of {', '.join(GATE_RULES)}, not {rule!r}")
    if rule == "better":
        return _gate_better(candidate, active, margin=margin)
    if candidate.pairs == 0:
        return GateResult(candidate, active, False, "no held-out examples to judge on")
    if not len(candidate.outcomes) == len(active.outcomes) == candidate.pairs:
        raise ValueError(
            "the not-worse rule compares pair by pair: both adapters need their outcomes on "
            "the same held-out pairs"
        )
    paired = list(zip(candidate.outcomes, active.outcomes, strict=True))
    better = sum(c > a for c, a in paired)
    worse = sum(c < a for c, a in paired)
    right = sum(c == 1.0 for c in candidate.outcomes)
    wrong = sum(c == 0.0 for c in candidate.outcomes)
    p_worse = sign_test(better, worse)
    evidence = {
        "rule": rule,
        "alpha": alpha,
        "better_pairs": better,
        "worse_pairs": worse,
        "p_worse": round(p_worse, 4),
        "right_pairs": right,
        "wrong_pairs": wrong,
    }
    figures = (
        f"accuracy {candidate.accuracy:.2f} vs {active.accuracy:.2f}, "
        f"margin {candidate.mean_margin:.3f} vs {active.mean_margin:.3f}; "
        f"better on {better} of {len(paired)} pairs, worse on {worse} (p={p_worse:.2f})"
    )

    def verdict(passed: bool, reason: str) -> GateResult:
        return GateResult(candidate, active, passed, reason, evidence)

    if all(c == 0.5 for c in candidate.outcomes):
        return verdict(False, f"it ties the base model on every held-out pair ({figures})")
    if p_worse < alpha:
        return verdict(False, f"worse than the active adapter ({figures})")
    return verdict(True, f"not shown worse, the canary decides ({figures})")


def _gate_better(
    candidate: PreferenceScore, active: PreferenceScore, *, margin: float
) -> GateResult:
    """Deploy only a candidate that beats the active adapter on held-out preferences.

    "Beats" is a preference accuracy higher by more than `margin` on the same pairs; with
    `margin` 0, equal accuracy and a larger mean reward margin also wins. Margins alone do not
    decide across adapters: an adapter's implicit reward grows with how far it moved from the
    base model, so one trained longer shows larger margins on everything (a simulated round
    rejected a candidate at accuracy 0.77 vs 0.62 because the older adapter's margins were
    larger). A candidate must also lean the right way on average (positive mean margin).
    """
    if candidate.pairs == 0:
        return GateResult(candidate, active, False, "no held-out examples to judge on")
    figures = (
        f"accuracy {candidate.accuracy:.2f} vs {active.accuracy:.2f}, "
        f"margin {candidate.mean_margin:.3f} vs {active.mean_margin:.3f}"
    )
    gain = candidate.accuracy - active.accuracy
    tie_won = margin <= 0 and abs(gain) <= 1e-9 and candidate.mean_margin > active.mean_margin
    if candidate.mean_margin > 0 and (gain > margin + 1e-9 or tie_won):
        return GateResult(candidate, active, True, figures, {"rule": "better"})
    return GateResult(
        candidate,
        active,
        False,
        f"does not beat the active adapter ({figures})",
        {"rule": "better"},
    )
