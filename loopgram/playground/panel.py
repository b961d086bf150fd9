"""What the side panel shows: what the bot stored, read straight from the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, func, select

from loopgram import adapters, feedback
from loopgram.assistants import ASSISTANTS
from loopgram.models import Interaction, Rating, ReviewItem, ReviewStatus

EXCERPT = 160


def _excerpt(text: str | None, width: int = EXCERPT) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _message_ids(interaction: Interaction) -> list[int]:
    ids = set(interaction.telegram_message_ids or [])
    if interaction.telegram_message_id is not None:
        ids.add(interaction.telegram_message_id)
    return sorted(ids)


def chart_version(*, session: Session) -> str:
    """Changes whenever a rating is added or changed: the /stats chart is redrawn then only."""
    count, latest = session.exec(select(func.count(), func.max(Rating.updated_at))).one()
    return f"{count}-{latest.isoformat() if latest else 0}"


def snapshot(*, session: Session, names: Mapping[int, str], limit: int = 8) -> dict[str, Any]:
    """The latest interactions with their ratings, the reward buffer, the adapters served
    per assistant and the review queue."""
    interactions = session.exec(
        select(Interaction).order_by(col(Interaction.id).desc()).limit(limit)
    ).all()
    ids = [i.id for i in interactions if i.id is not None]
    ratings: dict[int, list[dict[str, Any]]] = {}
    if ids:
        for rating in session.exec(
            select(Rating).where(col(Rating.interaction_id).in_(ids)).order_by(col(Rating.id))
        ).all():
            ratings.setdefault(rating.interaction_id, []).append(
                {
                    "user_id": rating.user_id,
                    "user": names.get(rating.user_id, str(rating.user_id)),
                    "value": rating.value,
                    "reason": rating.reason,
                    "comment": rating.comment,
                    "source": rating.source,
                }
            )
    buffer = feedback.reward_buffer_size(session=session)
    per_assistant: dict[str, dict[str, Any]] = {}
    for name in ASSISTANTS:
        active, canary = adapters.serving(session=session, assistant=name)
        per_assistant[name] = {
            "buffer": feedback.reward_buffer_size(session=session, assistant=name),
            "active": active.name if active else None,
            "canary": canary.name if canary else None,
        }
    pending = session.exec(
        select(func.count())
        .select_from(ReviewItem)
        .where(col(ReviewItem.status) == ReviewStatus.pending)
    ).one()
    return {
        "interactions": [
            {
                "id": i.id,
                "chat_id": i.chat_id,
                "user_id": i.user_id,
                "user": names.get(i.user_id, str(i.user_id)),
                "assistant": i.assistant,
                "prompt": _excerpt(i.prompt),
                "answer": _excerpt(i.answer),
                "model": i.model,
                "adapter": i.adapter,
                "latency_ms": i.latency_ms,
                "status": str(i.status),
                "message_ids": _message_ids(i),
                "parent_id": i.parent_interaction_id,
                "ratings": ratings.get(i.id or 0, []),
            }
            for i in interactions
        ],
        "buffer": buffer,
        "assistants": per_assistant,
        "review_pending": int(pending),
        "chart_version": chart_version(session=session),
    }
