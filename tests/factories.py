"""Rows as the bot writes them, for tests that start from an existing conversation."""

from __future__ import annotations

from loopgram import crud
from loopgram.db import Database
from loopgram.models import Interaction, InteractionStatus


def add_interaction(
    db: Database,
    *,
    user_id: int = 7,
    prompt: str = "question",
    answer: str = "a",
    assistant: str = "chat",
    parent: int | None = None,
    adapter: str | None = None,
    status: InteractionStatus = InteractionStatus.ok,
    with_messages: bool = False,
) -> int:
    """One answered question in the user's private chat; returns the interaction id."""
    interaction = Interaction(
        chat_id=user_id,
        user_id=user_id,
        assistant=assistant,
        prompt=prompt,
        prompt_messages=[{"role": "user", "content": prompt}] if with_messages else [],
        answer=answer,
        parent_interaction_id=parent,
        adapter=adapter,
        status=status,
    )
    row = db.call(crud.add_interaction, interaction=interaction)
    assert row.id is not None
    return row.id
