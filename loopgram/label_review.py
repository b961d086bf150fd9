"""Rows of a labeled table that a person should look at, as review items.

A table labeled in the bot marks the rows the model was unsure of (confidence below
LOW_CONFIDENCE) or gave no valid label for. Each becomes a labeling interaction of the person
who sent the table — the text, exactly what the model was sent, and its answer — flagged for
review like an unsure label in a chat. A moderator's decision then does what it does for any
label: a correction or an approval confirms the label (a few-shot example for the chat's label
set) and becomes training data.

Sending the same table again queues none of its rows twice: an interaction remembers its table
(a hash of the file's content) and its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from loopgram import review
from loopgram.models import Interaction, InteractionStatus

log = logging.getLogger(__name__)

MAX_ROWS = 100  # per table: the queue is people's time, a table can hold thousands of rows


@dataclass(frozen=True)
class RowToReview:
    line: int  # the row's line in the table, the header being line 1 (as a spreadsheet shows it)
    text: str
    messages: list[dict[str, str]]
    label: str  # "" when the model gave no valid label
    confidence: float
    error: str = ""

    def answer(self) -> str:
        """The model's answer as the review card and a correction expect it (labels are
        canonical JSON); nothing when it gave no valid label."""
        if not self.label:
            return ""
        return json.dumps({"label": self.label, "confidence": self.confidence, "reason": ""})

    def note(self, file_name: str) -> str:
        verdict = f"{self.label} {self.confidence:.2f}" if self.label else "no valid label"
        return f"{verdict} · {file_name}, row {self.line}"


def queue_rows(
    *,
    session: Session,
    rows: Sequence[RowToReview],
    chat_id: int,
    user_id: int,
    label_set_id: int | None,
    model: str,
    table: str,
    file_name: str,
) -> int:
    """Store and flag the rows not queued for this table before; how many were queued now.
    `table` identifies the file's content (a hash)."""
    texts = {row.text for row in rows}
    earlier = session.exec(
        select(Interaction).where(
            Interaction.chat_id == chat_id,
            Interaction.assistant == "label",
            col(Interaction.prompt).in_(texts),
        )
    ).all()
    queued = {(i.prompt, i.options.get("row")) for i in earlier if i.options.get("table") == table}
    added = 0
    for row in rows:
        if (row.text, str(row.line)) in queued:
            continue
        interaction = Interaction(
            chat_id=chat_id,
            user_id=user_id,
            assistant="label",
            prompt=row.text,
            answer=row.answer(),
            prompt_messages=row.messages,
            model=model,
            status=InteractionStatus.ok if row.label else InteractionStatus.failed,
            error=row.error[:512] or None,
            options={"table": table, "row": str(row.line), "file": file_name[:128]},
            label_set_id=label_set_id,
        )
        session.add(interaction)
        session.flush()
        assert interaction.id is not None
        review.flag(
            session=session,
            interaction_id=interaction.id,
            reason=review.LOW_CONFIDENCE,
            note=row.note(file_name),
        )
        added += 1
    log.info("label_review.queued chat_id=%s table=%s rows=%d", chat_id, table, added)
    return added
