"""`Database.run_grouped`: the per-update writes, group-committed on a SQLite file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from loopgram import crud
from loopgram.db import Database
from loopgram.models import Interaction, ProcessedUpdate, User
from loopgram.settings import DatabaseSettings
from tests.factories import add_interaction


def _count(db: Database, model: Any) -> int:
    """Counted through a new engine: only what is committed to the file is seen."""
    other = Database.from_settings(DatabaseSettings(database_url=str(db.engine.url)))
    try:
        return int(
            other.call(
                lambda *, session: session.exec(select(func.count()).select_from(model)).one()
            )
        )
    finally:
        other.dispose()


def _processed(update_id: int) -> Any:
    def insert(*, session: Session) -> int:
        session.add(ProcessedUpdate(update_id=update_id))
        session.flush()
        return update_id

    return insert


async def test_units_submitted_together_share_one_commit_and_are_on_disk(
    sqlite_db: Database,
) -> None:
    results = await asyncio.gather(*(sqlite_db.run_grouped(_processed(i)) for i in range(200)))
    assert results == list(range(200))
    assert _count(sqlite_db, ProcessedUpdate) == 200
    assert sqlite_db._grouped is not None and sqlite_db._grouped.batches < 200


async def test_a_failing_unit_is_rolled_back_alone(sqlite_db: Database) -> None:
    def fails(*, session: Session) -> None:
        session.add(ProcessedUpdate(update_id=999))
        session.flush()
        raise ValueError("bad input")

    outcomes = await asyncio.gather(
        sqlite_db.run_grouped(_processed(1)),
        sqlite_db.run_grouped(fails),
        sqlite_db.run_grouped(_processed(1)),  # the same key again: IntegrityError
        sqlite_db.run_grouped(_processed(2)),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[3] == 2
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], IntegrityError)
    ids = sqlite_db.call(
        lambda *, session: sorted(session.exec(select(ProcessedUpdate.update_id)).all())
    )
    assert ids == [1, 2]


async def test_nested_savepoints_of_units_work_inside_a_batch(sqlite_db: Database) -> None:
    """Dedup and the first-contact upsert keep their meaning when batched together."""
    marks = await asyncio.gather(
        *(sqlite_db.run_grouped(crud.mark_update_processed, update_id=7) for _ in range(5))
    )
    assert sorted(marks) == [False, False, False, False, True]
    users = await asyncio.gather(
        *(
            sqlite_db.run_grouped(crud.upsert_user, user_id=42, language="en", first_name="A")
            for _ in range(5)
        )
    )
    assert {u.id for u in users} == {42} and len({id(u) for u in users}) == 5
    assert _count(sqlite_db, User) == 1


async def test_a_transaction_lost_mid_batch_fails_every_unit_and_keeps_nothing(
    sqlite_db: Database,
) -> None:
    """What SQLite does on a full disk or an I/O error (rolls the transaction back): the
    units that ran before are lost with it, so their callers must not hear "done"."""

    def lose_the_transaction(*, session: Session) -> None:
        session.connection().exec_driver_sql("ROLLBACK")
        raise OSError("disk I/O error")

    outcomes = await asyncio.gather(
        sqlite_db.run_grouped(_processed(1)),
        sqlite_db.run_grouped(lose_the_transaction),
        return_exceptions=True,
    )
    if not isinstance(outcomes[1], BaseException) or outcomes[0] == 1:
        pytest.fail(f"the batch was split or the loss went unnoticed: {outcomes}")
    assert all(isinstance(o, OSError) for o in outcomes)
    assert _count(sqlite_db, ProcessedUpdate) == 0
    assert await sqlite_db.run_grouped(_processed(3)) == 3  # the writer carries on


async def test_a_cancelled_caller_does_not_undo_or_block_the_others(sqlite_db: Database) -> None:
    first = asyncio.ensure_future(sqlite_db.run_grouped(_processed(1)))
    await asyncio.sleep(0)  # submitted: the caller now only waits for the commit
    second = sqlite_db.run_grouped(_processed(2))
    first.cancel()
    assert await second == 2
    await asyncio.sleep(0.1)
    assert _count(sqlite_db, ProcessedUpdate) == 2  # the cancelled unit still ran


async def test_dispose_finishes_queued_units_and_the_writer_restarts(sqlite_db: Database) -> None:
    pending = [asyncio.ensure_future(sqlite_db.run_grouped(_processed(i))) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.to_thread(sqlite_db.dispose)
    assert await asyncio.gather(*pending) == [0, 1, 2]
    assert await sqlite_db.run_grouped(_processed(3)) == 3


async def test_run_grouped_is_run_elsewhere(db: Database) -> None:
    """Postgres (and in-memory SQLite) have no group-commit writer: same results."""
    assert await db.run_grouped(crud.mark_update_processed, update_id=5)
    assert not await db.run_grouped(crud.mark_update_processed, update_id=5)
    memory = Database.from_settings(DatabaseSettings(database_url="sqlite://"))
    assert memory._grouped is None
    memory.dispose()


def test_set_interaction_messages_touches_only_those_columns(db: Database) -> None:
    iid = add_interaction(db, prompt="p", answer="a")
    db.call(crud.set_interaction_messages, interaction_id=iid, message_ids=[10, 11])
    row = db.call(crud.get_interaction, interaction_id=iid)
    assert row is not None
    assert (row.telegram_message_ids, row.telegram_message_id) == ([10, 11], 11)
    assert (row.prompt, row.answer) == ("p", "a")
    db.call(crud.set_interaction_messages, interaction_id=iid, message_ids=[])
    row = db.call(crud.get_interaction, interaction_id=iid)
    assert row is not None and (row.telegram_message_ids, row.telegram_message_id) == ([], None)
    missing = db.call(crud.get_interaction, interaction_id=iid + 1000)
    db.call(crud.set_interaction_messages, interaction_id=iid + 1000, message_ids=[1])
    assert missing is None and db.call(crud.get_interaction, interaction_id=iid + 1000) is None
    assert isinstance(row, Interaction)
