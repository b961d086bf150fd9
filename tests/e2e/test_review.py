"""Human review inside Telegram, through the real bot and the Bot API emulator: a user's 👎
reaches the moderators' chat, a moderator corrects it, the gold pair lands in the buffer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.models import (
    AuditLog,
    Interaction,
    PairSource,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
    Role,
    User,
)
from tests.e2e.conftest import has_rating_buttons, rows, wait_db

MODS = -8000
ADMIN, MOD_A, MOD_B, USER, OTHER = 8100, 8101, 8102, 8201, 8202


@pytest.fixture
async def running(bot_settings) -> AsyncIterator[EmulatedBot]:  # type: ignore[no-untyped-def]
    settings = bot_settings(
        ADMIN_IDS=str(ADMIN),
        MODERATOR_IDS=f"{MOD_A},{MOD_B}",
        MODERATOR_CHAT_ID=str(MODS),
        EMBEDDING_MODEL="hashing",
    )
    async with emulated_bot(settings, with_model=False) as env:
        env.emulator.group(MODS, "Moderators", bot_is_admin=True)
        yield env


def buttons(message: dict[str, Any]) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


def is_card(message: dict[str, Any]) -> bool:
    return "Review #" in message.get("text", "") and "✅ Approve" in buttons(message)


async def thumbs_down(env: EmulatedBot, user_id: int, text: str) -> dict[str, Any]:
    """A user asks, presses 👎 and picks a reason; returns the answer message."""
    emu = env.emulator
    user = emu.user(user_id, f"User{user_id}", language_code="en")
    await user.send_text(text)
    answer = await emu.wait_for_bot_message(
        user_id, lambda m: has_rating_buttons(m) and text[:5] not in m.get("text", "")
    )
    await user.press(answer, "👎")
    reasons = await emu.wait_for_bot_message(
        user_id, lambda m: any("Wrong" in b for b in buttons(m))
    )
    await user.press(reasons, "❌ Wrong")
    return answer


async def card_for(env: EmulatedBot, n: int = 1) -> dict[str, Any]:
    emu = env.emulator
    await emu.wait_for(lambda: len([m for m in emu.bot_messages(MODS) if is_card(m)]) >= n)
    return [m for m in emu.bot_messages(MODS) if is_card(m)][n - 1]


async def test_thumbs_down_to_correction_to_gold_pair(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    answer = await thumbs_down(running, USER, "What is the capital of Australia?")
    card = await card_for(running)
    assert "What is the capital of Australia?" in card["text"]
    assert "❌ Wrong" in card["text"]  # the user's reason is on the card
    mod = emu.user(MOD_A, "Mia", username="mia", language_code="en")
    await mod.press(card, "✏️ Correct", chat=emu.group(MODS))
    await emu.wait_for_bot_message(
        MODS, lambda m: "send the correct answer for" in m.get("text", "")
    )
    await mod.send_text("The capital of Australia is Canberra.", chat=emu.group(MODS))
    await emu.wait_for_bot_message(MODS, lambda m: m.get("text") == "Decided. Thank you!")

    pairs = await wait_db(db, rows(PreferencePair))
    pair = pairs[0]
    assert pair.source == PairSource.correction and pair.weight == 3.0
    assert pair.chosen == "The capital of Australia is Canberra."
    assert pair.rejected == answer["text"] or pair.rejected.strip()
    item = (await db.run(rows(ReviewItem)))[0]
    assert item.status == ReviewStatus.corrected and item.reviewer_id == MOD_A

    # The card now says who decided, and its buttons are gone.
    def edited_card() -> dict[str, Any]:
        return next(m for m in emu.bot_messages(MODS) if m["message_id"] == card["message_id"])

    await emu.wait_for(lambda: "Corrected by" in edited_card()["text"])
    edited = edited_card()
    assert "Corrected by @mia" in edited["text"] and not buttons(edited)
    # The person who asked gets the corrected answer.
    await emu.wait_for_bot_message(USER, lambda m: "A moderator corrected" in m.get("text", ""))
    # And the export shows it beside the user's rating.
    from loopgram.export import iter_feedback

    exported = await db.run(lambda *, session: list(iter_feedback(session=session)))
    assert exported[0]["rating"] == -1
    assert exported[0]["correction"] == "The capital of Australia is Canberra."


async def test_two_moderators_pressing_at_once_decide_once(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    await thumbs_down(running, USER, "Tell me a fact about owls.")
    card = await card_for(running)
    group = emu.group(MODS)
    mia = emu.user(MOD_A, "Mia", language_code="en")
    max_ = emu.user(MOD_B, "Max", language_code="en")
    await asyncio.gather(
        mia.press(card, "✅ Approve", chat=group), max_.press(card, "❌ Reject", chat=group)
    )
    await emu.wait_for(lambda: len(emu.callback_answers) >= 4)  # 2 from the user + 2 here
    decisions = await db.run(rows(ReviewDecision))
    assert len(decisions) == 1
    item = (await db.run(rows(ReviewItem)))[0]
    assert item.status in (ReviewStatus.approved, ReviewStatus.rejected)
    texts = [a.get("text", "") for a in emu.callback_answers[-2:]]
    assert "Decided. Thank you!" in texts
    assert any("already decided" in t or "Another moderator" in t for t in texts)
    # Pressing again changes nothing either.
    await mia.press(card, "✅ Approve", chat=group)
    await emu.wait_for(lambda: len(emu.callback_answers) >= 5)
    assert len(await db.run(rows(ReviewDecision))) == 1


async def test_every_review_button_refuses_non_moderators(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    await thumbs_down(running, USER, "Explain rainbows please.")
    card = await card_for(running)
    intruder = emu.user(OTHER, "Ivan", language_code="en")
    group = emu.group(MODS)
    for label in ("✅ Approve", "❌ Reject", "✏️ Correct", "⏭ Skip"):
        await intruder.press(card, label, chat=group)
    item_id = (await db.run(rows(ReviewItem)))[0].id
    # Forged callback data pressed in a private chat with the bot does not help either.
    await intruder.send_text("/start")
    reply = await emu.wait_for_bot_message(OTHER, lambda m: "Hi" in m.get("text", ""))
    for forged in (f"rv:{item_id}:a", f"rv:{item_id}:c", "rv:999:r", "rv:x:y"):
        await intruder.press(reply, forged)
    await emu.wait_for(lambda: len(emu.callback_answers) >= 2 + 8)
    alerts = emu.callback_answers[-8:]
    assert all(a["show_alert"] for a in alerts)
    assert sum("Only moderators" in a.get("text", "") for a in alerts) == 7
    item = (await db.run(rows(ReviewItem)))[0]
    assert item.status == ReviewStatus.pending and item.claimed_by is None
    assert await db.run(rows(ReviewDecision)) == []


async def test_bad_corrections_are_refused_and_the_item_stays_open(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    await thumbs_down(running, USER, "Summarize the plot of Hamlet.")
    card = await card_for(running)
    group = emu.group(MODS)
    mia = emu.user(MOD_A, "Mia", language_code="en")
    await mia.press(card, "✏️ Correct", chat=group)
    await emu.wait_for_bot_message(MODS, lambda m: "send the correct answer" in m.get("text", ""))
    await mia.send_text("x" * 4001, chat=group)
    await emu.wait_for_bot_message(
        MODS, lambda m: "must be 1–4,000 characters" in m.get("text", "")
    )
    assert (await db.run(rows(ReviewItem)))[0].status == ReviewStatus.pending
    await mia.send_text("/cancel", chat=group)
    await emu.wait_for_bot_message(MODS, lambda m: "cancelled" in m.get("text", ""))
    item = (await db.run(rows(ReviewItem)))[0]
    assert item.status == ReviewStatus.pending and item.claimed_by is None
    # Another moderator can now take it.
    max_ = emu.user(MOD_B, "Max", language_code="en")
    await max_.press(card, "✅ Approve", chat=group)
    await wait_db(
        db, lambda *, session: session.exec(select(ReviewItem)).one().status == "approved"
    )
    ratings = await db.run(rows(Rating))
    assert {(r.user_id, r.value, r.source) for r in ratings} >= {(MOD_B, 1, "review")}


async def test_private_review_queue_skip_report_and_roles(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    admin = emu.user(ADMIN, "Ada", language_code="en")
    newbie = emu.user(OTHER, "Nick", username="nick", language_code="en")
    await newbie.send_text("/review")
    await emu.wait_for_bot_message(OTHER, lambda m: "Only moderators" in m.get("text", ""))
    await newbie.send_text("/grant @nick moderator")
    await emu.wait_for_bot_message(OTHER, lambda m: "admin" in m.get("text", "").lower())
    await admin.send_text("/grant @nick moderator")
    await emu.wait_for_bot_message(ADMIN, lambda m: "now moderator" in m.get("text", ""))
    user = await db.run(lambda *, session: session.get(User, OTHER))
    assert user.role == Role.moderator
    audit = await db.run(rows(AuditLog))
    assert any(a.action == "role.set" and a.actor_id == ADMIN for a in audit)

    # A user reports an answer with /report.
    asker = emu.user(USER, "Uma", language_code="en")
    await asker.send_text("Name three rivers.")
    answer = await emu.wait_for_bot_message(USER, has_rating_buttons)
    await asker.send_text("/report it is wrong", reply_to=answer)
    await emu.wait_for_bot_message(USER, lambda m: "moderators will look" in m.get("text", ""))
    item = await wait_db(db, rows(ReviewItem))
    assert item[0].reason == "report" and "it is wrong" in (item[0].note or "")

    # The new moderator takes it in private, skips it, and the queue is then empty for them.
    await newbie.send_text("/review")
    card = await emu.wait_for_bot_message(OTHER, lambda m: "Review #" in m.get("text", ""))
    await newbie.press(card, "⏭ Skip")
    await emu.wait_for_bot_message(OTHER, lambda m: "queue is empty" in m.get("text", ""))
    # Banned: the bot stops answering them.
    await admin.send_text("/ban 8202")
    await emu.wait_for_bot_message(ADMIN, lambda m: "is banned" in m.get("text", ""))
    user = await db.run(lambda *, session: session.get(User, OTHER))
    assert user.banned


async def test_label_correction_must_be_a_label_and_confirms_it(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    # The scripted model answers plain text, so the label answer is invalid (twice).
    asker = emu.user(USER, "Uma", language_code="en")
    await asker.send_text("/label")
    await emu.wait_for_bot_message(USER, lambda m: "Assistant:" in m.get("text", ""))
    await asker.send_text("My order never arrived")
    failed = await emu.wait_for_bot_message(USER, lambda m: "second try" in m.get("text", ""))
    assert failed
    # A failed answer cannot be rated; report it so a moderator labels it.
    interaction = (await db.run(rows(Interaction)))[-1]
    from loopgram import review

    await db.run(review.flag, interaction_id=interaction.id, reason=review.REPORT)
    card = await card_for(running)
    assert "Labels: question, complaint, praise, request, other" in card["text"]
    group = emu.group(MODS)
    mia = emu.user(MOD_A, "Mia", language_code="en")
    await mia.press(card, "✏️ Correct", chat=group)
    await emu.wait_for_bot_message(MODS, lambda m: "send the correct answer" in m.get("text", ""))
    await mia.send_text("shipping", chat=group)
    await emu.wait_for_bot_message(MODS, lambda m: "not one of the labels" in m.get("text", ""))
    await mia.send_text("complaint: the order is missing", chat=group)
    await emu.wait_for_bot_message(MODS, lambda m: m.get("text") == "Decided. Thank you!")
    item = (await db.run(rows(ReviewItem)))[0]
    assert json.loads(item.correction or "") == {
        "label": "complaint",
        "confidence": 1.0,
        "reason": "the order is missing",
    }
    from loopgram.models import LabeledExample

    examples = await db.run(rows(LabeledExample))
    assert [(e.label, e.source) for e in examples] == [("complaint", "review")]
    # No pair: the failed answer has nothing to be preferred over.
    assert await db.run(rows(PreferencePair)) == []


async def test_stats_for_admins_with_a_chart(running: EmulatedBot) -> None:
    emu = running.emulator
    await thumbs_down(running, USER, "How tall is Everest?")
    card = await card_for(running)
    mia = emu.user(MOD_A, "Mia", language_code="en")
    await mia.press(card, "❌ Reject", chat=emu.group(MODS))
    await emu.wait_for(lambda: any("Decided" in a.get("text", "") for a in emu.callback_answers))
    user = emu.user(USER, "Uma", language_code="en")
    await user.send_text("/stats")
    await emu.wait_for_bot_message(USER, lambda m: "admins" in m.get("text", "").lower())
    admin = emu.user(ADMIN, "Ada", language_code="ru")
    await admin.send_text("/stats")
    text = await emu.wait_for_bot_message(ADMIN, lambda m: "Очередь проверки" in m.get("text", ""))
    assert "0 ожидают" in text["text"] and f"👤 {MOD_A}: ✅ 0 ❌ 1 ✏️ 0" in text["text"]
    photo = await emu.wait_for_bot_message(ADMIN, lambda m: "photo" in m)
    assert photo["caption"].startswith("Доля 👍")


async def test_a_deleted_answer_closes_its_card_with_a_note(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    await thumbs_down(running, USER, "What do cats eat?")
    card = await card_for(running)

    def delete_answers(*, session: Any) -> None:
        for interaction in session.exec(select(Interaction)).all():
            session.delete(interaction)

    await db.run(delete_answers)
    mia = emu.user(MOD_A, "Mia", language_code="en")
    await mia.press(card, "✅ Approve", chat=emu.group(MODS))
    await emu.wait_for(
        lambda: any("no longer exists" in a.get("text", "") for a in emu.callback_answers)
    )

    def closed() -> dict[str, Any]:
        return next(m for m in emu.bot_messages(MODS) if m["message_id"] == card["message_id"])

    await emu.wait_for(lambda: closed()["text"].startswith("🔒 Closed"))
    assert not buttons(closed())
    assert await db.run(rows(ReviewDecision)) == []
