"""The adapter registry: versions, canary, promotion and rollback.

Every trained adapter gets a new name `<assistant>-v<N>` that is never reused: vLLM can
serve stale cached prefixes for an adapter reloaded under the same name. Adapter folders
stay on disk while registered (the server reads them on load). Every change is audited.

Reward models (`kind` reward, `<assistant>-rm-v<N>`) live in the same table with their own
version sequence. They are never served as policy adapters: a new one becomes the
assistant's active reward model directly (`activate_reward_model`) once it has won its gate.
Best-of-n (`loopgram.best_of_n`) has the model server load the active one for scoring
(`/v1/load_reward_model`) the first time it needs it, and again after a server restart.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import event, func
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col, select

from loopgram import crud
from loopgram.adapter_server import AdapterServer
from loopgram.canary import Tally, Verdict, judge, look_reached, looks
from loopgram.canary_outcomes import OutcomeCutoff, arm_outcomes, nth_cutoff, tally
from loopgram.errors import LoopgramError, NotFoundError
from loopgram.models import Adapter, AdapterKind, AdapterStatus, utcnow
from loopgram.settings import LearningSettings

log = logging.getLogger(__name__)

_UNLOADS = "loopgram.adapters.unload_after_commit"


def _unload_after_commit(session: Session, server: AdapterServer, name: str) -> None:
    """Unload `name` from the model server once this unit of work has committed.

    Loads happen first (a request may only be routed to a loaded adapter); unloads last, so
    a registry change that fails to commit leaves every adapter it still names loaded.
    The registry's functions run as their own unit of work (`Database.call`), never inside a
    grouped savepoint."""
    session.info.setdefault(_UNLOADS, []).append((server, name))


@event.listens_for(Session, "after_commit")
def _run_unloads(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: the transaction around it may still roll back
    for server, name in session.info.pop(_UNLOADS, []):
        try:
            server.unload(name)
        except Exception:  # committed already: a LoRA left loaded costs a slot, not an answer
            log.exception("adapters.unload_failed name=%s", name)


@event.listens_for(Session, "after_transaction_end")
def _drop_unloads(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back or closed uncommitted: nothing changed
        session.info.pop(_UNLOADS, None)


def adapter_name(assistant: str, version: int, kind: AdapterKind = AdapterKind.policy) -> str:
    if kind == AdapterKind.reward:
        return f"{assistant}-rm-v{version}"
    return f"{assistant}-v{version}"


def next_version(
    *, session: Session, assistant: str, kind: AdapterKind = AdapterKind.policy
) -> int:
    latest = session.exec(
        select(func.max(Adapter.version)).where(
            Adapter.assistant == assistant, Adapter.kind == kind
        )
    ).one()
    return int(latest or 0) + 1


def register(
    *,
    session: Session,
    assistant: str,
    path: str,
    base_model: str,
    method: str,
    training_run_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    kind: AdapterKind = AdapterKind.policy,
) -> Adapter:
    version = next_version(session=session, assistant=assistant, kind=kind)
    adapter = Adapter(
        assistant=assistant,
        version=version,
        name=adapter_name(assistant, version, kind),
        path=path,
        base_model=base_model,
        method=method,
        kind=kind,
        training_run_id=training_run_id,
        metrics=metrics or {},
    )
    session.add(adapter)
    session.flush()
    _audit(session, "adapter.registered", adapter, actor_id=None)
    return adapter


def list_adapters(*, session: Session, assistant: str | None = None) -> list[Adapter]:
    query = select(Adapter)
    if assistant is not None:
        query = query.where(Adapter.assistant == assistant)
    return list(session.exec(query.order_by(col(Adapter.assistant), col(Adapter.version))).all())


def serving(*, session: Session, assistant: str) -> tuple[Adapter | None, Adapter | None]:
    """(active, canary) of an assistant; None active means the base model."""
    rows = session.exec(
        select(Adapter).where(
            Adapter.assistant == assistant,
            Adapter.kind == AdapterKind.policy,
            col(Adapter.status).in_([AdapterStatus.active, AdapterStatus.canary]),
        )
    ).all()
    active = next((a for a in rows if a.status == AdapterStatus.active), None)
    canary = next((a for a in rows if a.status == AdapterStatus.canary), None)
    return active, canary


def get_by_name(*, session: Session, name: str) -> Adapter:
    adapter = session.exec(select(Adapter).where(Adapter.name == name)).first()
    if adapter is None:
        raise NotFoundError(f"no adapter named {name!r}", key="error-adapter-unknown", name=name)
    return adapter


def deploy(
    *,
    session: Session,
    name: str,
    server: AdapterServer,
    canary: bool = True,
    actor_id: int | None = None,
) -> Adapter:
    """Load the adapter on every replica, then route traffic to it (canary share or all)."""
    adapter = get_by_name(session=session, name=name)
    if adapter.kind == AdapterKind.reward:
        raise LoopgramError(
            f"{name} is a reward model: it scores answers and is never served",
            key="error-reward-model-not-servable",
            name=name,
        )
    if adapter.status in (AdapterStatus.active, AdapterStatus.canary):
        raise LoopgramError(
            f"{name} is already {adapter.status}",
            key="error-adapter-already",
            name=name,
            status=str(adapter.status),
        )
    server.load(adapter.name, adapter.path)  # before any routing change: no request can fail
    active, current_canary = serving(session=session, assistant=adapter.assistant)
    if current_canary is not None:
        _set(session, current_canary, AdapterStatus.rejected, actor_id, "replaced by " + name)
        _unload_after_commit(session, server, current_canary.name)
    if canary:
        _set(session, adapter, AdapterStatus.canary, actor_id)
    else:
        if active is not None:
            _retire(session, active, server, actor_id, "replaced by " + name)
        _set(session, adapter, AdapterStatus.active, actor_id)
    adapter.deployed_at = utcnow()
    session.add(adapter)
    session.flush()
    return adapter


def promote(
    *, session: Session, assistant: str, server: AdapterServer, actor_id: int | None = None
) -> Adapter:
    active, canary = serving(session=session, assistant=assistant)
    if canary is None:
        raise LoopgramError(
            f"{assistant} has no canary to promote",
            key="error-adapter-no-canary",
            assistant=assistant,
        )
    _set(session, canary, AdapterStatus.active, actor_id)
    if active is not None:
        _retire(session, active, server, actor_id, "promoted " + canary.name)
    return canary


def _retire(
    session: Session, adapter: Adapter, server: AdapterServer, actor_id: int | None, note: str
) -> None:
    """A replaced active adapter leaves the model server too: servers hold a few LoRAs
    (`--max-loras`), and one kept per promotion would leave no room for the next canary.
    Requests running on it finish (the built-in server queues an unload behind them); one
    routed to it from a bot's cached routing is routed again (`AnswerService._reroute`); a
    rollback loads it again."""
    _set(session, adapter, AdapterStatus.retired, actor_id, note)
    _unload_after_commit(session, server, adapter.name)


def rollback(
    *, session: Session, assistant: str, server: AdapterServer, actor_id: int | None = None
) -> Adapter | None:
    """Drop the canary if there is one; otherwise go back to the previous active adapter
    (or to the base model when there was none). Returns what serves the assistant now."""
    active, canary = serving(session=session, assistant=assistant)
    if canary is not None:
        _set(session, canary, AdapterStatus.rejected, actor_id, "rolled back")
        _unload_after_commit(session, server, canary.name)
        return active
    if active is None:
        raise LoopgramError(
            f"{assistant} serves the base model: nothing to roll back",
            key="error-adapter-nothing-to-roll-back",
            assistant=assistant,
        )
    previous = session.exec(
        select(Adapter)
        .where(
            Adapter.assistant == assistant,
            Adapter.kind == AdapterKind.policy,
            Adapter.status == AdapterStatus.retired,
            col(Adapter.deployed_at).is_not(None),
            Adapter.version < active.version,
        )
        .order_by(col(Adapter.version).desc())
    ).first()
    if previous is not None:
        server.load(previous.name, previous.path)
        _set(session, previous, AdapterStatus.active, actor_id, "rollback of " + active.name)
    _set(session, active, AdapterStatus.rejected, actor_id, "rolled back")
    _unload_after_commit(session, server, active.name)  # as a promotion does
    return previous


def active_reward_model(*, session: Session, assistant: str) -> Adapter | None:
    """The reward model that scores `assistant`'s answers now, or None."""
    return session.exec(
        select(Adapter)
        .where(
            Adapter.assistant == assistant,
            Adapter.kind == AdapterKind.reward,
            Adapter.status == AdapterStatus.active,
        )
        .order_by(col(Adapter.version).desc())
    ).first()


def activate_reward_model(
    *, session: Session, name: str, actor_id: int | None = None, note: str | None = None
) -> Adapter:
    """Make a registered reward model its assistant's active one (the previous one retires).

    Nothing is loaded here: scorers read the registry and load the files themselves (the
    bot's best-of-n within the routing cache time, through the model server)."""
    adapter = get_by_name(session=session, name=name)
    if adapter.kind != AdapterKind.reward:
        raise LoopgramError(
            f"{name} is not a reward model", key="error-adapter-not-reward-model", name=name
        )
    if adapter.status == AdapterStatus.active:
        return adapter
    previous = active_reward_model(session=session, assistant=adapter.assistant)
    if previous is not None:
        _set(session, previous, AdapterStatus.retired, actor_id, "replaced by " + name)
    _set(session, adapter, AdapterStatus.active, actor_id, note)
    adapter.deployed_at = utcnow()
    session.add(adapter)
    session.flush()
    return adapter


def reject_reward_model(
    *, session: Session, name: str, reason: str, actor_id: int | None = None
) -> Adapter:
    """Record that a reward model lost its gate: kept on record with the reason, never used."""
    adapter = get_by_name(session=session, name=name)
    if adapter.kind != AdapterKind.reward:
        raise LoopgramError(
            f"{name} is not a reward model", key="error-adapter-not-reward-model", name=name
        )
    adapter.metrics = {**adapter.metrics, "rejected_because": reason}
    _set(session, adapter, AdapterStatus.rejected, actor_id, reason[:200])
    return adapter


def live_tally(
    *,
    session: Session,
    assistant: str,
    adapter: str | None,
    since: datetime | None,
    until: OutcomeCutoff | None = None,
) -> Tally:
    """The outcomes of first answers this adapter (None = base model) gave, per person
    (`loopgram.canary_outcomes`); with `until`, only those known up to that one."""
    outcomes = arm_outcomes(session=session, assistant=assistant, adapter=adapter, since=since)
    return tally(outcomes, until)


def evaluate_canary(
    *, session: Session, assistant: str, settings: LearningSettings, server: AdapterServer
) -> Verdict | None:
    """Promote or roll back the assistant's canary once its live ratings decide it. It is
    judged at planned looks (`canary.looks`) on the outcomes of its first answers
    (`canary_outcomes`), as many as the look, and the active model's over the same time, so
    checking often does not inflate its error rate."""
    active, canary = serving(session=session, assistant=assistant)
    if canary is None:
        return None
    since = canary.deployed_at
    outcomes = arm_outcomes(session=session, assistant=assistant, adapter=canary.name, since=since)
    points = looks(settings.canary_min_ratings, settings.canary_max_ratings)
    look = look_reached(len(outcomes), points)
    # The canary's first `look` outcomes, and the active model's meanwhile.
    cutoff = nth_cutoff(outcomes, look) if look is not None else None
    rated = tally(outcomes, cutoff)
    active_rated = live_tally(
        session=session,
        assistant=assistant,
        adapter=active.name if active else None,
        since=since,
        until=cutoff,
    )
    verdict = judge(
        rated,
        active_rated,
        min_ratings=settings.canary_min_ratings,
        max_ratings=settings.canary_max_ratings,
        margin=settings.canary_margin,
        confidence=settings.canary_confidence,
    )
    judged = {
        **_verdict_json(verdict),
        "people": len(rated.by_person),
        "design_effect": round(rated.design_effect, 3),
        "active_design_effect": round(active_rated.design_effect, 3),
    }
    canary.metrics = {**canary.metrics, "canary": judged}
    session.add(canary)
    if verdict.decision == "promote":
        promote(session=session, assistant=assistant, server=server)
    elif verdict.decision == "rollback":
        rollback(session=session, assistant=assistant, server=server)
    log.info(
        "canary.judged assistant=%s adapter=%s decision=%s reason=%s",
        assistant,
        canary.name,
        verdict.decision,
        verdict.reason,
    )
    return verdict


def _verdict_json(verdict: Verdict) -> dict[str, float | int | str]:
    return {
        "decision": str(verdict.decision),
        "difference": round(verdict.difference, 4),
        "low": round(verdict.low, 4),
        "high": round(verdict.high, 4),
        "reason": verdict.reason,
        "look": verdict.look,
        "confidence": round(verdict.confidence, 5),
    }


def _set(
    session: Session,
    adapter: Adapter,
    status: AdapterStatus,
    actor_id: int | None,
    note: str | None = None,
) -> None:
    before = str(adapter.status)
    adapter.status = status
    if status in (AdapterStatus.retired, AdapterStatus.rejected):
        adapter.retired_at = utcnow()
    session.add(adapter)
    session.flush()
    _audit(session, f"adapter.{status}", adapter, actor_id=actor_id, before=before, note=note)


def _audit(
    session: Session,
    action: str,
    adapter: Adapter,
    *,
    actor_id: int | None,
    before: str | None = None,
    note: str | None = None,
) -> None:
    details: dict[str, str] = {"name": adapter.name}
    if before is not None:
        details["from"] = before
    if note:
        details["note"] = note
    crud.audit(
        session=session,
        actor_id=actor_id,
        action=action,
        target_type="adapter",
        target_id=str(adapter.id),
        details=details,
    )
