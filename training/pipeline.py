"""A whole training run: lock → data → train → held-out gate → register → canary.

This is what `loopgram train` and the scheduled job call. Every outcome is recorded on a
`training_run` row: succeeded (deployed as canary), rejected (lost at the gate), refused
(would not fit / too little data) or failed (an error, with its message). A run killed
midway leaves no adapter (the trainer renames a complete folder into place) and no lock.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, func, select

from loopgram import adapters
from loopgram.adapter_server import AdapterServer
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.models import (
    AdapterKind,
    AdapterStatus,
    PairSource,
    PreferencePair,
    RunStatus,
    TrainingRun,
    utcnow,
)
from loopgram.settings import Settings
from training import datasets
from training.config import TrainConfig
from training.datasets import Example
from training.lock import training_lock
from training.resources import WouldNotFitError, check_fits, releases_memory
from training.reward_check import HeldOutAnswer

log = logging.getLogger(__name__)


class NotEnoughDataError(LoopgramError):
    key = "error-training-not-enough-data"


@dataclass
class RunReport:
    run_id: int | None
    status: str
    adapter: str | None = None
    detail: str = ""
    metrics: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "adapter": self.adapter,
            "detail": self.detail,
            "metrics": self.metrics or {},
        }


def resolve_model_path(settings: Settings) -> Path:
    from training.model_server.base_model import resolve_base_model

    return resolve_base_model(
        settings.learning.base_model_path, Path(settings.app.data_dir) / "models"
    )


@releases_memory  # the gate's scorer and the run's tensors, after the run
def run_training(
    *,
    settings: Settings,
    config: TrainConfig,
    db: Database,
    server: AdapterServer,
    model_path: Path | None = None,
) -> RunReport:
    with training_lock(
        config.assistant, redis_url=settings.redis.redis_url, data_dir=Path(settings.app.data_dir)
    ) as held:
        if not held:
            return RunReport(None, "skipped", detail=f"a {config.assistant} run is in progress")
        db.call(_fail_interrupted_runs, assistant=config.assistant)
        run = db.call(_start_run, config=config)
        assert run.id is not None
        try:
            return _run(run.id, settings, config, db, server, model_path)
        except (NotEnoughDataError, WouldNotFitError) as exc:
            db.call(_finish, run_id=run.id, status=RunStatus.refused, error=str(exc))
            return RunReport(run.id, RunStatus.refused.value, detail=str(exc))
        except Exception as exc:
            log.exception("training.failed run_id=%s", run.id)
            db.call(_finish, run_id=run.id, status=RunStatus.failed, error=repr(exc)[:2000])
            return RunReport(run.id, RunStatus.failed.value, detail=repr(exc)[:300])


def _run(
    run_id: int,
    settings: Settings,
    config: TrainConfig,
    db: Database,
    server: AdapterServer,
    model_path: Path | None,
) -> RunReport:
    from training.evaluate import PolicyScorer, gate
    from training.reward_check import agreement, reward_check
    from training.trainer import train_adapter

    if config.method == "reward":
        return _run_reward(run_id, settings, config, db, model_path)
    train_rows, eval_rows, pair_ids = db.call(dataset_for, config=config)
    if len(train_rows) < config.min_examples:
        raise NotEnoughDataError(
            f"{len(train_rows)} training examples for {config.assistant}, "
            f"at least {config.min_examples} are needed"
        )
    model_path = model_path or resolve_model_path(settings)
    check_fits(
        model_path,
        batch_size=config.passes()[0],  # activations are held for one forward pass
        max_length=config.max_length,
        budget_gb=config.memory_budget_gb,
        reference=config.method != "orpo",  # ORPO has no reference pass
    )
    version = db.call(adapters.next_version, assistant=config.assistant)
    name = adapters.adapter_name(config.assistant, version)
    output = Path(settings.learning.adapters_dir).resolve() / config.assistant / name
    if output.exists():
        # Left by a run killed after training and before registering: never registered (the
        # version comes from the registry), and in the way of this run's rename.
        log.warning("training.orphan_adapter_removed path=%s", output)
        shutil.rmtree(output)
    outcome = train_adapter(config, train_rows, model_path=model_path, output_dir=output)

    active, _canary = db.call(adapters.serving, assistant=config.assistant)
    scorer = PolicyScorer(model_path, beta=config.beta)
    scorer.add_adapter("candidate", outcome.adapter_path)
    if active is not None:
        scorer.add_adapter("active", Path(active.path))
    score = scorer.score_pairs if config.method in ("dpo", "orpo") else scorer.score_thumbs
    verdict = gate(
        score("candidate", eval_rows),
        score("active" if active is not None else None, eval_rows),
        margin=config.gate_margin,
        rule=config.gate_rule,
        alpha=config.gate_alpha,
    )
    # Answered once, then compared by the LLM judge and scored by the reward model.
    answers = _held_out_answers(config, scorer, eval_rows, has_active=active is not None)
    judged = _judge(settings, answers)
    rewarded = reward_check(db, config.assistant, answers)
    passed, reason = verdict.passed, verdict.reason
    if passed and judged.get("available"):
        from training.judge import judge_veto  # imports openai, as `_judge` does

        vetoed = judge_veto(
            judged,
            min_win_rate=config.judge_min_win_rate,
            rule=config.gate_rule,
            alpha=config.gate_alpha,
        )
        if vetoed is not None:
            passed, reason = False, vetoed
    if (
        passed
        and config.reward_min_win_rate > 0
        and rewarded.get("available")
        and rewarded["win_rate"] < config.reward_min_win_rate
    ):
        passed = False
        reason = (
            f"the reward model {rewarded['name']} prefers the active answers (candidate win "
            f"rate {rewarded['win_rate']:.2f} < {config.reward_min_win_rate:.2f})"
        )
    task = _task(config, scorer, has_active=active is not None) if passed else {}
    if task.get("available") and not task["passed"]:
        passed = False
        reason = (
            f"worse at the task: {task['metric']} {task['candidate']:.2f} against "
            f"{task['active']:.2f} on {task['items']} evaluation items (right on "
            f"{task['better_items']} the active adapter got wrong, wrong on "
            f"{task['worse_items']} it got right, p={task['p_worse']:.3f})"
        )
    gate_record = {
        **verdict.as_dict(),
        "passed": passed,
        "reason": reason,
        "judge": judged,
        "reward_model": rewarded,
        "agreement": agreement(judged, rewarded, answers),
        "task": task,
    }
    metrics = {
        "train_seconds": round(outcome.seconds, 1),
        "steps": outcome.steps,
        "peak_rss_mb": round(outcome.peak_rss_mb),
        "final": outcome.final,
        "history": outcome.history,
        "gate": gate_record,
        "against": active.name if active is not None else "base",
    }
    adapter = db.call(
        adapters.register,
        assistant=config.assistant,
        path=str(outcome.adapter_path),
        base_model=str(model_path),
        method=config.method,
        training_run_id=run_id,
        metrics={"gate": gate_record},
    )
    db.call(datasets.mark_consumed, pair_ids=pair_ids, run_id=run_id)
    if passed:
        db.call(adapters.deploy, name=adapter.name, server=server, canary=True)
        status = RunStatus.succeeded
    else:
        db.call(_reject_adapter, name=adapter.name)
        status = RunStatus.rejected
    db.call(
        _finish,
        run_id=run_id,
        status=status,
        metrics=metrics,
        adapter_id=adapter.id,
        counts=(len(train_rows), len(eval_rows)),
    )
    return RunReport(run_id, status.value, adapter.name, reason, metrics)


def _run_reward(
    run_id: int,
    settings: Settings,
    config: TrainConfig,
    db: Database,
    model_path: Path | None,
) -> RunReport:
    """A reward model from the same pairs as DPO: train → held-out pairwise gate against the
    active reward model on the same pairs → registered as `<assistant>-rm-v<N>`, activated or
    rejected. Never loaded into the model server, and the pairs are not marked consumed (that
    bookkeeping belongs to the policy runs)."""
    from training.reward import RewardScorer, reward_gate, train_reward_model

    train_rows, eval_rows, _pair_ids = db.call(dataset_for, config=config)
    if len(train_rows) < config.min_examples:
        raise NotEnoughDataError(
            f"{len(train_rows)} training pairs for {config.assistant}'s reward model, "
            f"at least {config.min_examples} are needed"
        )
    if not eval_rows:
        raise NotEnoughDataError(
            f"no held-out pairs for {config.assistant}'s reward model: more distinct questions "
            "are needed"
        )
    model_path = model_path or resolve_model_path(settings)
    # Each step scores a chosen and a rejected sequence per pair (counted by `pairs`), with no
    # reference pass and one score per sequence instead of vocabulary-wide logits.
    check_fits(
        model_path,
        batch_size=config.passes()[0],  # activations are held for one forward pass
        max_length=config.max_length,
        budget_gb=config.memory_budget_gb,
        reference=False,
        vocab_logits=False,
    )
    kind = AdapterKind.reward
    version = db.call(adapters.next_version, assistant=config.assistant, kind=kind)
    name = adapters.adapter_name(config.assistant, version, kind)
    output = Path(settings.learning.adapters_dir).resolve() / config.assistant / name
    if output.exists():
        log.warning("training.orphan_adapter_removed path=%s", output)
        shutil.rmtree(output)
    outcome = train_reward_model(config, train_rows, model_path=model_path, output_dir=output)

    active = db.call(adapters.active_reward_model, assistant=config.assistant)
    scorer = RewardScorer(model_path)
    scorer.add("candidate", outcome.adapter_path)
    candidate = scorer.evaluate("candidate", eval_rows)
    against: dict[str, Any] = {"name": None}
    active_score = None
    if active is not None:
        against = {"name": active.name}
        try:
            # The same held-out pairs; its own base model if BASE_MODEL_PATH changed since.
            if not (Path(active.path) / "adapter_config.json").exists():
                raise OSError(f"no reward model at {active.path}")
            same_base = Path(active.base_model).resolve() == Path(model_path).resolve()
            active_scorer = scorer if same_base else RewardScorer(Path(active.base_model))
            active_scorer.add("active", Path(active.path))
            active_score = active_scorer.evaluate("active", eval_rows)
        except (OSError, ValueError) as exc:
            # Its files are gone or unreadable: it cannot score anything any more either.
            log.warning("reward.active_unusable name=%s error=%s", active.name, exc)
            against["note"] = f"active reward model unusable: {str(exc)[:200]}"
    verdict = reward_gate(candidate, active_score, min_accuracy=config.reward_min_accuracy)
    gate_record = {**verdict.as_dict(), "against": against}
    metrics = {
        "train_seconds": round(outcome.seconds, 1),
        "steps": outcome.steps,
        "peak_rss_mb": round(outcome.peak_rss_mb),
        "final": outcome.final,
        "history": outcome.history,
        "heldout_accuracy": round(candidate.accuracy, 4),
        "heldout_mean_margin": round(candidate.mean_margin, 4),
        "heldout": candidate.as_dict(),
        "gate": gate_record,
        "against": against["name"] or "none",
    }
    adapter = db.call(
        adapters.register,
        assistant=config.assistant,
        path=str(outcome.adapter_path),
        base_model=str(model_path),
        method="reward",
        kind=kind,
        training_run_id=run_id,
        metrics={"heldout": candidate.as_dict(), "gate": gate_record},
    )
    if verdict.passed:
        db.call(adapters.activate_reward_model, name=adapter.name, note=verdict.reason)
        status = RunStatus.succeeded
    else:
        db.call(adapters.reject_reward_model, name=adapter.name, reason=verdict.reason)
        status = RunStatus.rejected
    db.call(
        _finish,
        run_id=run_id,
        status=status,
        metrics=metrics,
        adapter_id=adapter.id,
        counts=(len(train_rows), len(eval_rows)),
    )
    log.info(
        "reward.gate run_id=%s name=%s passed=%s reason=%s",
        run_id,
        adapter.name,
        verdict.passed,
        verdict.reason,
    )
    return RunReport(run_id, status.value, adapter.name, verdict.reason, metrics)


def _held_out_answers(
    config: TrainConfig, scorer: Any, eval_rows: list[dict[str, Any]], *, has_active: bool
) -> list[HeldOutAnswer]:
    """Greedy answers of the candidate and of the active adapter (or the base model) to the
    first `judge_samples` held-out prompts: what the judge and the reward model compare."""
    answers = []
    for row in eval_rows[: max(config.judge_samples, 0)]:
        prompt = row["prompt"]
        candidate = scorer.generate("candidate", prompt, config.judge_max_tokens)
        active = scorer.generate("active" if has_active else None, prompt, config.judge_max_tokens)
        answers.append(HeldOutAnswer(prompt, candidate, active))
    return answers


def _judge(settings: Settings, answers: Sequence[HeldOutAnswer]) -> dict[str, Any]:
    """The LLM judge's verdict on held-out answers, or why there is none (it never blocks a
    run by being unreachable: the preference gate still decides then)."""
    if not answers:
        return {"available": False, "note": "judge off or no held-out prompts"}
    import openai

    from training.judge import PairwiseJudge, judge_candidate

    key = settings.llm.llm_api_key.get_secret_value() if settings.llm.llm_api_key else "EMPTY"
    client = openai.OpenAI(base_url=settings.llm.base_url, api_key=key, timeout=60, max_retries=0)
    items = [(a.question, a.candidate, a.active) for a in answers]
    try:
        score = judge_candidate(PairwiseJudge(client, settings.llm.llm_model), items)
    except openai.APIError as exc:
        log.warning("judge.unavailable error=%s", exc)
        return {"available": False, "note": f"judge unavailable: {str(exc)[:200]}"}
    finally:
        client.close()
    return {"available": True, **score.as_dict()}


def _task(config: TrainConfig, scorer: Any, *, has_active: bool) -> dict[str, Any]:
    """The assistant's own evaluation (as `loopgram eval` runs it) on a few items, candidate
    against the active adapter (or the base model); only runs once the preference gate passed."""
    from loopgram.evaluation.gate import PRIMARY_METRIC, task_check
    from loopgram.evaluation.runner import evaluate
    from loopgram.evaluation.sets import load_set

    if config.task_eval_items <= 0 or config.assistant not in PRIMARY_METRIC:
        return {"available": False, "note": "no task check for this assistant or it is off"}
    eval_set = load_set(config.assistant, limit=config.task_eval_items)

    async def both() -> tuple[Any, Any]:
        candidate = await evaluate(
            config.assistant,
            llm=InProcessModel(scorer),
            model="candidate",
            eval_set=eval_set,
            concurrency=1,
            max_tokens=config.task_max_tokens,
            max_rewrite_length=config.task_max_rewrite_length,
        )
        active = await evaluate(
            config.assistant,
            llm=InProcessModel(scorer),
            model="active" if has_active else "",
            eval_set=eval_set,
            concurrency=1,
            max_tokens=config.task_max_tokens,
            max_rewrite_length=config.task_max_rewrite_length,
        )
        return candidate, active

    try:
        candidate, active = asyncio.run(both())
    except LoopgramError as exc:
        log.warning("gate.task_unavailable error=%s", exc)
        return {"available": False, "note": f"task check failed: {str(exc)[:200]}"}
    found = task_check(
        candidate, active, margin=config.task_eval_margin, alpha=config.gate_alpha
    ).as_dict()
    if config.assistant == "paraphrase":
        found["max_rewrite_length"] = config.task_max_rewrite_length
    return found


class InProcessModel:
    """The gate's scorer (base model + adapters in memory) behind the evaluation's model
    interface: greedy answers, one at a time; "" names the base model."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    async def complete(
        self,
        messages: Sequence[dict[str, str]],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        return str(
            await asyncio.to_thread(
                self.scorer.generate, model or None, list(messages), max_tokens or 256
            )
        )


def dataset_for(
    *, session: Session, config: TrainConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """(train rows, held-out rows for the gate, ids of the stored pairs trained on).

    ORPO and a reward model learn from the same preference pairs as DPO. Best-of-n pairs (the
    reward model's own labels) join the training side only with `reward_pairs`, and never a
    reward model's data: it must not learn from what it labelled."""
    if config.method in ("dpo", "reward", "orpo"):
        pairs = datasets.build_preference_dataset(
            session=session,
            assistant=config.assistant,
            include_consumed=config.whole_buffer,
            reward_pairs=config.reward_pairs and config.method != "reward",
        )
        return _rows(_newest(pairs, config.max_examples), config)
    thumbs = datasets.build_kto_dataset(
        session=session, assistant=config.assistant, reward_pairs=config.reward_pairs
    )
    return _rows(_newest(thumbs, config.max_examples), config)


def _newest(examples: list[Example], limit: int) -> list[Example]:
    """The `limit` examples on the most recent answers, whatever kind of pair they are."""
    ordered = sorted(examples, key=lambda e: max(e.interaction_ids, default=0))
    return ordered[-limit:]


def _rows(
    examples: list[datasets.Example], config: TrainConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    train, evaluation = datasets.split(
        examples, eval_fraction=config.eval_fraction, seed=config.seed
    )
    # The gate judges against what people preferred, never against the reward model's labels.
    evaluation = [e for e in evaluation if e.source != PairSource.best_of_n.value]
    pair_ids = sorted({pid for example in train for pid in example.pair_ids})
    return datasets.to_trl_rows(train), datasets.to_trl_rows(evaluation), pair_ids


def reap_interrupted_runs(*, settings: Settings, db: Database) -> int:
    """Mark failed the runs still `running` whose lock nobody holds (their process died).

    The scheduler calls this before `due_assistants`, which skips an assistant with a run in
    progress: without it, a run killed mid-way would stop scheduled training for good."""

    def running(*, session: Session) -> list[str]:
        query = select(TrainingRun.assistant).where(TrainingRun.status == RunStatus.running)
        return sorted(set(session.exec(query).all()))

    reaped = 0
    for assistant in db.call(running):
        with training_lock(
            assistant, redis_url=settings.redis.redis_url, data_dir=Path(settings.app.data_dir)
        ) as held:
            if held:
                reaped += db.call(_fail_interrupted_runs, assistant=assistant)
    return reaped


def _fail_interrupted_runs(*, session: Session, assistant: str) -> int:
    """Runs still marked running when nobody holds the lock died midway."""
    stale = session.exec(
        select(TrainingRun).where(
            TrainingRun.assistant == assistant, TrainingRun.status == RunStatus.running
        )
    ).all()
    for run in stale:
        run.status = RunStatus.failed
        run.error = "interrupted: the process running it stopped"
        run.finished_at = utcnow()
        session.add(run)
    return len(stale)


def _start_run(*, session: Session, config: TrainConfig) -> TrainingRun:
    run = TrainingRun(
        assistant=config.assistant,
        method=config.method,
        status=RunStatus.running,
        config=config.as_dict(),
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def _finish(
    *,
    session: Session,
    run_id: int,
    status: RunStatus,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
    adapter_id: int | None = None,
    counts: tuple[int, int] = (0, 0),
) -> None:
    run = session.get(TrainingRun, run_id)
    assert run is not None
    run.status = status
    run.error = error
    run.metrics = metrics or {}
    run.evaluation = (metrics or {}).get("gate", {})
    run.adapter_id = adapter_id
    run.train_examples, run.eval_examples = counts
    run.examples = sum(counts)
    run.finished_at = utcnow()
    session.add(run)


def _reject_adapter(*, session: Session, name: str) -> None:
    adapter = adapters.get_by_name(session=session, name=name)
    adapter.status = AdapterStatus.rejected
    adapter.retired_at = utcnow()
    session.add(adapter)


def due_assistants(*, session: Session, min_new_examples: int) -> list[str]:
    """Assistants whose buffer has grown enough since their last successful run.

    An assistant with a canary being judged waits: a new candidate would be gated against an
    active adapter that may be replaced a minute later, and two canaries cannot share traffic.
    """
    from loopgram.assistants import ASSISTANTS

    due = []
    for name in ASSISTANTS:
        if adapters.serving(session=session, assistant=name)[1] is not None:
            continue
        counts = datasets.buffer_counts(session=session, assistant=name)
        if counts["new_examples"] >= min_new_examples:
            due.append(name)
    running = set(
        session.exec(
            select(TrainingRun.assistant).where(col(TrainingRun.status) == RunStatus.running)
        ).all()
    )
    return [name for name in due if name not in running]


# Pairs people made. Best-of-n pairs are labelled by the reward model itself: training the
# next one on them would teach it its own opinions, and they must not trigger that run either.
HUMAN_PAIR_SOURCES = (PairSource.regenerate, PairSource.correction, PairSource.rating)
# A reward run that never started (refused: too little data, would not fit) is no reference
# point: the pairs it did not train on are still new. A failed one is, so that a run that
# crashes is not retried on every check, only once as many new pairs have arrived again.
_NOT_STARTED = (RunStatus.refused, RunStatus.queued)


def reward_due_assistants(*, session: Session, min_new_pairs: int) -> list[str]:
    """Assistants with at least `min_new_pairs` preference pairs from people (not best-of-n)
    since their last reward-model run started, and no reward-model run in progress.

    `min_new_pairs` <= 0 turns scheduled reward-model runs off."""
    from loopgram.assistants import ASSISTANTS

    if min_new_pairs <= 0:
        return []
    due = []
    for name in ASSISTANTS:
        runs = session.exec(
            select(TrainingRun.status, TrainingRun.started_at, TrainingRun.created_at).where(
                TrainingRun.assistant == name,
                TrainingRun.method == "reward",
                col(TrainingRun.status).not_in(_NOT_STARTED),
            )
        ).all()
        if any(status == RunStatus.running for status, _, _ in runs):
            continue
        since = max((started or created for _, started, created in runs), default=None)
        if new_human_pairs(session=session, assistant=name, since=since) >= min_new_pairs:
            due.append(name)
    return due


def new_human_pairs(*, session: Session, assistant: str, since: datetime | None) -> int:
    """Preference pairs people made for `assistant` after `since` (all of them when None)."""
    query = (
        select(func.count())
        .select_from(PreferencePair)
        .where(PreferencePair.assistant == assistant)
        .where(col(PreferencePair.source).in_(HUMAN_PAIR_SOURCES))
    )
    if since is not None:
        query = query.where(col(PreferencePair.created_at) > since)
    return int(session.exec(query).one())
