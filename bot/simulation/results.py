"""What a simulation measured: per round, per control draw and per discarded candidate, the
summary line, and the JSON document the report is built from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.simulation.heldout import RateEstimate
from bot.simulation.options import SimulationOptions
from bot.simulation.paired import PairedDifference, paired_difference


@dataclass
class TrainingSnapshot:
    """The examples a round's run was about to train on, for the shuffled control."""

    rows: list[dict[str, Any]]
    reward_rows: list[dict[str, Any]] | None = None  # the reward model's, when one trains
    adapter: str | None = None  # the candidate the run produced, if any


@dataclass
class RoundResult:
    round: int
    heldout: RateEstimate
    adapter: str | None
    deployed: bool
    candidate: str | None = None
    candidates: list[str] = field(default_factory=list)
    """The round's candidate adapters by name (`candidate` joins them for the report)."""
    run_status: str = "no run"
    detail: str = ""
    canary: str = ""
    canary_live: str = ""
    """The canary's last verdict: live difference, its interval and the look it was on."""
    canary_seconds: float = 0.0
    """Time serving canary traffic until the verdict (the price of the canary's cap)."""
    canary_ratings: int = 0
    """Live ratings the round's canary verdicts were made on (the look each was judged at):
    what a verdict cost the people who rated a canary's answers."""
    traffic_liked: float = 0.0
    traffic_answers: int = 0
    traffic_failures: int = 0
    pairs: int = 0
    train_seconds: float = 0.0
    """Policy training (the trainer's own time; `policy_run_seconds` adds the gate)."""
    seconds: float = 0.0
    reviewed: int = 0
    corrected: int = 0
    policy_run_seconds: float = 0.0
    reward_run_status: str = ""
    """"" when no reward model is trained (best-of-n and reward pairs off)."""
    reward_model: str | None = None
    """The active reward model after the round."""
    reward_accuracy: float | None = None
    """Held-out pairwise accuracy of the round's reward-model candidate."""
    reward_detail: str = ""
    """Why the round's reward-model candidate was refused, rejected or failed."""
    reward_train_seconds: float = 0.0
    reward_run_seconds: float = 0.0
    answer_seconds: list[float] = field(default_factory=list)
    """How long each person waited for an answer in the round's traffic (before the canary)."""
    traffic_best_of_n: int = 0
    """Traffic answers the bot picked from n candidates (scored or not)."""
    traffic_unscored: int = 0
    measure_seconds: float = 0.0
    heldout_reused: bool = False
    """The bot served what an earlier measurement measured (a rejected candidate, a rolled-back
    canary): its estimate stands, the same answers are not generated again."""

    @property
    def answer_p50(self) -> float | None:
        return percentile(self.answer_seconds, 0.5)

    @property
    def answer_p90(self) -> float | None:
        return percentile(self.answer_seconds, 0.9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            **self.heldout.as_dict(),
            "adapter": self.adapter,
            "deployed": self.deployed,
            "candidate": self.candidate,
            "run_status": self.run_status,
            "detail": self.detail,
            "canary": self.canary,
            "canary_live": self.canary_live,
            "canary_seconds": round(self.canary_seconds, 1),
            "canary_ratings": self.canary_ratings,
            "traffic_thumbs_up_rate": round(self.traffic_liked, 4),
            "traffic_answers": self.traffic_answers,
            "traffic_failures": self.traffic_failures,
            "reviewed": self.reviewed,
            "corrections": self.corrected,
            "train_examples": self.pairs,
            "train_seconds": round(self.train_seconds, 1),
            "seconds": round(self.seconds, 1),
            "policy_train_seconds": round(self.train_seconds, 1),
            "policy_run_seconds": round(self.policy_run_seconds, 1),
            "reward_run_status": self.reward_run_status,
            "reward_model": self.reward_model,
            "reward_accuracy": self.reward_accuracy,
            "reward_detail": self.reward_detail[:300],
            "reward_train_seconds": round(self.reward_train_seconds, 1),
            "reward_run_seconds": round(self.reward_run_seconds, 1),
            "answer_p50_seconds": _rounded(self.answer_p50),
            "answer_p90_seconds": _rounded(self.answer_p90),
            "traffic_best_of_n_answers": self.traffic_best_of_n,
            "traffic_unscored_answers": self.traffic_unscored,
            "measure_seconds": round(self.measure_seconds, 1),
            "heldout_reused": self.heldout_reused,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class DiscardedCandidate:
    """A candidate the loop did not keep, measured after the run (`--measure-discarded`)."""

    round: int
    adapter: str
    why: str
    """"rejected by the gate" or "rolled back by the canary"."""
    heldout: RateEstimate


@dataclass
class SimulationResult:
    baseline: RateEstimate
    rounds: list[RoundResult]
    shuffled_control: RateEstimate | None
    control_detail: str
    options: SimulationOptions
    seconds: float
    discarded: list[DiscardedCandidate] = field(default_factory=list)
    extra_controls: list[RateEstimate] = field(default_factory=list)
    """The further draws of the shuffled control (`control_draws` > 1), each trained on its
    own shuffle; `shuffled_control` is the first."""

    @property
    def final(self) -> RateEstimate:
        return self.rounds[-1].heldout if self.rounds else self.baseline

    @property
    def controls(self) -> list[RateEstimate]:
        """Every draw of the shuffled control, the first one first."""
        if self.shuffled_control is None:
            return []
        return [self.shuffled_control, *self.extra_controls]

    def summary(self) -> str:
        controls = self.controls
        if len(controls) > 1:
            mean, low, high = _mean_range([c.rate for c in controls])
            control = (
                f"shuffled control {mean:.2f}, mean of {len(controls)} draws {low:.2f}–{high:.2f}"
            )
        elif controls:
            control = f"shuffled control {controls[0].rate:.2f}"
        else:
            control = f"no shuffled control: {self.control_detail}"
        line = (
            f"👍 rate {self.baseline.rate:.2f} → {self.final.rate:.2f} after "
            f"{len(self.rounds)} round{'s' if len(self.rounds) != 1 else ''} ({control})"
        )
        paired = self.paired_line()
        return f"{line}; {paired}" if paired else line

    def paired(self, estimate: RateEstimate, reference: RateEstimate) -> PairedDifference | None:
        """`estimate - reference` item by item, if both were measured on the same seeded
        items (None otherwise: then only the two intervals can be compared)."""
        if (
            estimate.seed is None
            or estimate.seed != reference.seed
            or not estimate.outcomes
            or len(estimate.outcomes) != len(reference.outcomes)
        ):
            return None
        return paired_difference(estimate.outcomes, reference.outcomes)

    def paired_line(self) -> str:
        """The paired differences: last round and control vs base, last round vs control."""
        parts = []
        if self.rounds and (gain := self.paired(self.final, self.baseline)) is not None:
            parts.append(f"vs base {_signed(gain)}")
        controls = self.controls
        drifts = self._paired_all(controls, self.baseline)
        if len(drifts) == 1:
            parts.append(f"control vs base {_signed(drifts[0])}")
        elif drifts:
            parts.append(f"control vs base {_draws(drifts)}")
        edges = self._paired_all(controls, self.final, reverse=True) if self.rounds else []
        if len(edges) == 1:
            parts.append(f"vs control {_signed(edges[0])}")
        elif edges:
            parts.append(f"vs control {_draws(edges)}")
        return f"paired: {', '.join(parts)}" if parts else ""

    def _paired_all(
        self, controls: list[RateEstimate], other: RateEstimate, *, reverse: bool = False
    ) -> list[PairedDifference]:
        """Each control minus `other` (or `other` minus each, `reverse`), where they pair."""
        found = []
        for control in controls:
            a, b = (other, control) if reverse else (control, other)
            difference = self.paired(a, b)
            if difference is not None:
                found.append(difference)
        return found

    def _controls_summary(self) -> dict[str, Any]:
        """Mean and range over the control's draws: its rate, its drift from the base model
        and the final round's edge over it, with how many draws are within noise."""
        controls = self.controls
        if not controls:
            return {}
        summary: dict[str, Any] = {
            "draws": len(controls),
            "thumbs_up_rate": _spread([c.rate for c in controls]),
        }
        comparisons = {
            "vs_baseline": self._paired_all(controls, self.baseline),
            "final_vs": self._paired_all(controls, self.final, reverse=True) if self.rounds else [],
        }
        for key, differences in comparisons.items():
            if differences:
                summary[key] = _spread([d.difference for d in differences]) | {
                    "within_noise": sum(d.within_noise for d in differences)
                }
        return summary

    def _paired_dict(self, estimate: RateEstimate, reference: RateEstimate) -> dict[str, Any]:
        difference = self.paired(estimate, reference)
        return {} if difference is None else difference.as_dict()

    def options_line(self) -> str:
        """What this run compared: method, best-of-n, reward pairs, what held-out measures."""
        options = self.options
        best = f"best-of-{options.best_of_n}" if options.best_of_n > 1 else "best-of-n off"
        pairs = "reward-model pairs on" if options.reward_pairs else "reward-model pairs off"
        return f"method {options.method} · {best} · {pairs} · held-out: {self.measured()}"

    def measured(self) -> str:
        if self.options.best_of_n > 1:
            return "answers as served (best-of-n once a reward model is active)"
        return "the policy alone"

    def costs(self) -> dict[str, Any]:
        """The run's cost in time, summed (training) or over every answer (latency)."""
        waited = [s for r in self.rounds for s in r.answer_seconds]
        return {
            "policy_train_seconds": round(sum(r.train_seconds for r in self.rounds), 1),
            "reward_train_seconds": round(sum(r.reward_train_seconds for r in self.rounds), 1),
            "answer_p50_seconds": _rounded(percentile(waited, 0.5)),
            "answer_p90_seconds": _rounded(percentile(waited, 0.9)),
            "canary_rounds": sum(1 for r in self.rounds if r.canary_ratings),
            "canary_ratings": sum(r.canary_ratings for r in self.rounds),
        }

    def cost_line(self) -> str:
        costs = self.costs()
        p50 = costs["answer_p50_seconds"]
        waited = "no answers" if p50 is None else f"answer p50 {p50:.1f} s"
        line = (
            f"time: policy training {costs['policy_train_seconds']:.0f} s, reward-model "
            f"training {costs['reward_train_seconds']:.0f} s, {waited}"
        )
        if costs["canary_ratings"]:
            rounds = costs["canary_rounds"]
            line += (
                f"; canary verdicts: {costs['canary_ratings']} live ratings in {rounds} "
                f"round{'s' if rounds != 1 else ''}"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        draws = [
            {
                **c.as_dict(),
                "adapter": c.model,
                "vs_baseline": self._paired_dict(c, self.baseline),
                "final_vs": self._paired_dict(self.final, c) if self.rounds else {},
            }
            for c in self.controls
        ]
        # `shuffled_control` and `final_vs_control` are the first draw's, where readers of
        # reports from before the draws look for them.
        control: dict[str, Any] = {"thumbs_up_rate": None, "detail": self.control_detail}
        final_vs_control: dict[str, Any] = {}
        if draws:
            first = {k: v for k, v in draws[0].items() if k != "final_vs"}
            control = first | {"trained_on": self.control_detail}  # scrambled, as it says
            final_vs_control = draws[0]["final_vs"]
        rounds = []
        for r in self.rounds:
            point = r.as_dict() | {"vs_baseline": self._paired_dict(r.heldout, self.baseline)}
            if r.heldout.best_of_n:
                policy = replace(r.heldout, outcomes=r.heldout.policy_outcomes)
                point["policy_vs_baseline"] = self._paired_dict(policy, self.baseline)
            rounds.append(point)
        served = {r.round: r.heldout for r in self.rounds}
        discarded = [
            {
                "round": d.round,
                **d.heldout.as_dict(),
                "adapter": d.adapter,
                "why": d.why,
                "vs_baseline": self._paired_dict(d.heldout, self.baseline),
                "vs_served": self._paired_dict(d.heldout, served[d.round]),
            }
            for d in self.discarded
        ]
        return {
            "rounds": rounds,
            "discarded": discarded,
            "baseline": {**self.baseline.as_dict(), "adapter": None},
            "shuffled_control": control,
            "final_vs_control": final_vs_control,
            "shuffled_controls": draws,
            "controls_summary": self._controls_summary(),
            "summary": self.summary(),
            "options_summary": self.options_line(),
            "cost_summary": self.cost_line(),
            "costs": self.costs(),
            "seconds": round(self.seconds, 1),
            "settings": {
                "assistants": list(self.options.assistants),
                "languages": list(self.options.languages),
                "people": self.options.people,
                "noise": self.options.behaviour.noise,
                "eval_samples": self.options.eval_samples,
                "max_tokens": self.options.max_tokens,
                "seed": self.options.seed,
                "control_draws": self.options.control_draws,
                "method": self.options.method,
                "best_of_n": self.options.best_of_n,
                "reward_pairs": self.options.reward_pairs,
                "canary_ratings": self.options.canary_max_ratings,
                "canary_margin": self.options.canary_margin,
                "measure_discarded": self.options.measure_discarded,
                "heldout_measures": self.measured(),
                "paired_seed": self.baseline.seed,
            },
        }


def _signed(difference: PairedDifference) -> str:
    return f"{difference.difference:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]"


def _draws(differences: list[PairedDifference]) -> str:
    """Several draws of one comparison: their mean, their range, and how many of them have a
    95% interval that holds zero."""
    mean, low, high = _mean_range([d.difference for d in differences])
    inside = sum(d.within_noise for d in differences)
    return (
        f"{mean:+.2f} mean of {len(differences)} draws ({low:+.2f}…{high:+.2f}, "
        f"{inside} within noise)"
    )


def _mean_range(values: list[float]) -> tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def _spread(values: list[float]) -> dict[str, Any]:
    mean, low, high = _mean_range(values)
    return {"mean": round(mean, 4), "min": round(low, 4), "max": round(high, 4)}
