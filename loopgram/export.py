"""`loopgram feedback export`: ratings joined with their answers (and a moderator's
correction of the answer, where there is one), as JSONL or CSV.

Every free text (prompt, answer, comment, correction) goes through `loopgram.pii.scrub`:
an export leaves the database, so phones, e-mails, card numbers, IBANs, tokens and keys are
replaced by typed placeholders, exactly as in the training datasets."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal

from sqlmodel import Session, col, select

from loopgram.models import Interaction, Rating, ReviewItem, ReviewStatus
from loopgram.pii import scrub

EXPORT_FIELDS = (
    "interaction_id",
    "user_id",
    "chat_id",
    "assistant",
    "prompt",
    "answer",
    "rating",
    "reason",
    "comment",
    "created_at",
    "adapter",
    "model",
    "parent_interaction_id",
    "correction",
)


# The fields a person typed or a model wrote: scrubbed on the way out.
TEXT_FIELDS = ("prompt", "answer", "comment", "correction")


def iter_feedback(
    *,
    session: Session,
    since: datetime | None = None,
    assistant: str | None = None,
    scrub_pii: bool = True,
) -> Iterator[dict[str, Any]]:
    """Rows of the export, oldest rating first. `scrub_pii=False` is for code that stays
    inside the process (tests comparing raw texts); nothing written out should use it."""
    # A moderator's correction of the answer, if there is one (the latest).
    correction = (
        select(ReviewItem.correction)
        .where(
            col(ReviewItem.interaction_id) == col(Interaction.id),
            col(ReviewItem.status) == ReviewStatus.corrected,
        )
        .order_by(col(ReviewItem.decided_at).desc())
        .limit(1)
        .scalar_subquery()
    )
    query = select(Rating, Interaction, correction).join(
        Interaction, col(Interaction.id) == col(Rating.interaction_id)
    )
    if since is not None:
        query = query.where(Rating.updated_at >= since)
    if assistant is not None:
        query = query.where(Interaction.assistant == assistant)
    for rating, interaction, corrected in session.exec(query.order_by(col(Rating.id))):
        row = {
            "interaction_id": interaction.id,
            "user_id": rating.user_id,
            "chat_id": interaction.chat_id,
            "assistant": interaction.assistant,
            "prompt": interaction.prompt,
            "answer": interaction.answer,
            "rating": rating.value,
            "reason": rating.reason,
            "comment": rating.comment,
            "created_at": _iso_utc(rating.created_at),
            "adapter": interaction.adapter,
            "model": interaction.model,
            "parent_interaction_id": interaction.parent_interaction_id,
            "correction": corrected,
        }
        if scrub_pii:
            for name in TEXT_FIELDS:
                if isinstance(row[name], str):
                    row[name] = scrub(row[name])
        yield row


def _iso_utc(moment: datetime) -> str:
    # SQLite hands datetimes back without their zone; every stored time is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def write_export(
    rows: Iterator[dict[str, Any]], out: IO[str], *, fmt: Literal["jsonl", "csv"]
) -> int:
    count = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        return count
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
