"""Rows of a labeled table as review items, on SQLite and Postgres: stored with what the model
was sent and answered, flagged once per table and row, and what the sender is told."""

from __future__ import annotations

import json

from sqlmodel import select

from bot.label_files import _queued_lines
from loopgram import label_review
from loopgram.batch_label import BatchSummary, RowResult
from loopgram.db import Database
from loopgram.models import Interaction, InteractionStatus, ReviewItem

MESSAGES = [{"role": "system", "content": "You label items."}]


def row(
    line: int, text: str, label: str = "other", confidence: float = 0.3
) -> label_review.RowToReview:
    return label_review.RowToReview(
        line=line,
        text=text,
        messages=[*MESSAGES, {"role": "user", "content": text}],
        label=label,
        confidence=confidence,
        error="" if label else "invalid-output: not JSON",
    )


def queue(db: Database, rows: list[label_review.RowToReview], table: str = "t1") -> int:
    return db.call(
        label_review.queue_rows,
        rows=rows,
        chat_id=42,
        user_id=7,
        label_set_id=None,
        model="loopgram-base",
        table=table,
        file_name="inbox.csv",
    )


def test_rows_are_queued_once_per_table_and_row(db: Database) -> None:
    rows = [row(3, "hard to say"), row(4, "gibberish", label=""), row(9, "hard to say")]
    assert queue(db, rows) == 3  # the same text on two rows is two items
    assert queue(db, rows) == 0
    assert queue(db, rows[:1], table="t2") == 1  # another table with the same row

    def stored(*, session):  # type: ignore[no-untyped-def]
        return (
            session.exec(select(Interaction).order_by(Interaction.id)).all(),
            session.exec(select(ReviewItem).order_by(ReviewItem.id)).all(),
        )

    interactions, items = db.call(stored)
    assert len(interactions) == len(items) == 4
    first = interactions[0]
    assert (first.chat_id, first.user_id, first.assistant) == (42, 7, "label")
    assert json.loads(first.answer) == {"label": "other", "confidence": 0.3, "reason": ""}
    assert first.options == {"table": "t1", "row": "3", "file": "inbox.csv"}
    assert first.prompt_messages[-1] == {"role": "user", "content": "hard to say"}
    failed = interactions[1]
    assert failed.status == InteractionStatus.failed and failed.answer == ""
    assert failed.error == "invalid-output: not JSON"
    assert [i.note for i in items[:2]] == [
        "other 0.30 · inbox.csv, row 3",
        "no valid label · inbox.csv, row 4",
    ]
    assert {i.reason for i in items} == {"low_confidence"}


def summary_with(rows_to_review: int) -> BatchSummary:
    summary = BatchSummary(rows=rows_to_review)
    for index in range(rows_to_review):
        summary.add(RowResult("other", 0.2, True), index)
    return summary


def test_what_the_sender_is_told() -> None:
    assert _queued_lines("en", 0, summary_with(0)) == []
    assert _queued_lines("en", 2, summary_with(2)) == [
        "👀 2 of them went to the moderators' review queue: their answers teach the labeling "
        "assistant."
    ]
    many = summary_with(label_review.MAX_ROWS + 5)
    assert _queued_lines("ru", label_review.MAX_ROWS, many) == [
        f"👀 Первые {label_review.MAX_ROWS} из {label_review.MAX_ROWS + 5} строк для проверки "
        "отправлены модераторам: их решения учат ассистента разметки."
    ]
    assert "already in the moderators' review queue" in _queued_lines("en", 0, summary_with(3))[0]
    assert "already" in _queued_lines("en", 0, many)[0]  # a big table sent again
    assert "needs_review" in _queued_lines("en", None, summary_with(3))[0]


def test_skipped_rows_are_not_for_review() -> None:
    summary = BatchSummary(rows=3)
    summary.add(RowResult(error="empty"), 0)
    summary.add(RowResult("question", 0.95, False), 1)
    summary.add(RowResult(error="invalid-output: x"), 2)
    assert [index for index, _ in summary.to_review] == [2]
    assert summary.needs_review == 2  # the file still marks the empty row
