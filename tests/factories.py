"""Rows as the bot writes them, for tests that start from an existing conversation."""

from __future__ import annotations

from sqlmodel import Session

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


def activate_reward_model(
    db: Database, *, path: str, base_model: str, assistant: str = "chat"
) -> str:
    """Register a reward model at `path` and make it the assistant's active one; its name."""
    from loopgram import adapters
    from loopgram.models import AdapterKind

    def register(*, session: Session) -> str:
        row = adapters.register(
            session=session,
            assistant=assistant,
            path=path,
            base_model=base_model,
            method="reward",
            kind=AdapterKind.reward,
        )
        adapters.activate_reward_model(session=session, name=row.name)
        return row.name

    return db.call(register)
