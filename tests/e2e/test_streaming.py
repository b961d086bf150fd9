"""Streaming details: drafts, the edit fallback, Telegram's flood limits, reactions."""

from __future__ import annotations

from bot.emulated import emulated_bot
from loopgram.emulator import BotApiEmulator
from loopgram.models import Interaction, Rating
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from training.model_server.scripted import ScriptedBackend

LONG_REPLY = " ".join(f"word{i}" for i in range(120))


async def test_without_drafts_the_answer_streams_by_edits(
    bot_settings, scripted: ScriptedBackend
) -> None:  # type: ignore[no-untyped-def]
    scripted.reply, scripted.token_delay = LONG_REPLY, 0.01
    emulator = BotApiEmulator(token="777:OLDSERVER", drafts_supported=False)
    await emulator.start()
    try:
        async with emulated_bot(bot_settings(), emulator=emulator, with_model=False):
            ben = emulator.user(7001, "Ben", language_code="en")
            await ben.send_text("stream please")
            answer = await emulator.wait_for_bot_message(7001, has_rating_buttons)
            assert answer["text"] == LONG_REPLY
            assert len(answer.get("edits", [])) >= 2, "no intermediate edits"
            assert emulator.drafts(7001) == []
            # Later answers go straight to edits without trying drafts again.
            drafts_tried = sum(c.method == "sendMessageDraft" for c in emulator.calls)
            await ben.send_text("again")
            await emulator.wait_for_bot_message(7001, has_rating_buttons)
            assert sum(c.method == "sendMessageDraft" for c in emulator.calls) == drafts_tried
    finally:
        await emulator.stop()


async def test_flood_limits_are_honoured_and_the_answer_arrives(
    bot_settings, scripted: ScriptedBackend
) -> None:  # type: ignore[no-untyped-def]
    scripted.reply, scripted.token_delay = LONG_REPLY, 0.005
    emulator = BotApiEmulator(token="778:FLOODY")
    await emulator.start()
    try:
        async with emulated_bot(bot_settings(), emulator=emulator, with_model=False):
            group = emulator.group(-100700, "Busy group")
            ben = emulator.user(7002, "Ben", language_code="en")
            emulator.fail_next(
                "editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1, times=2
            )
            emulator.fail_next(
                "sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, times=1
            )
            await ben.send_text("@loopgram_bot flood test", chat=group)
            answer = await emulator.wait_for_bot_message(-100700, has_rating_buttons, timeout=20)
            assert answer["text"] == LONG_REPLY
            refused = [c for c in emulator.calls if c.error and c.error.get("error_code") == 429]
            assert len(refused) >= 1
    finally:
        await emulator.stop()


async def test_native_reaction_counts_as_a_rating(running, scripted: ScriptedBackend) -> None:  # type: ignore[no-untyped-def]
    emu, db = running.emulator, running.stack.db
    anna = emu.user(7003, "Anna", language_code="ru")
    await anna.send_text("вопрос")
    answer = await emu.wait_for_bot_message(7003, has_rating_buttons)

    def attached(*, session):  # type: ignore[no-untyped-def]
        from loopgram.models import Interaction

        return [i for i in rows(Interaction)(session=session) if i.telegram_message_id]

    await wait_db(db, attached)
    await anna.react(answer, "👎")
    (rating,) = await wait_db(db, rows(Rating))
    assert (rating.value, rating.source) == (-1, "reaction")
    # A reaction that is neither thumbs up nor down changes nothing.
    await anna.react(answer, "🤔")
    (rating,) = await db.run(rows(Rating))
    assert rating.value == -1


async def test_an_answer_whose_streamed_message_was_deleted_arrives_anew(
    bot_settings, scripted: ScriptedBackend
) -> None:  # type: ignore[no-untyped-def]
    """People delete a half-written answer (private chats let them delete the bot's messages
    too); the finished answer then comes as a new message instead of failing its last edit."""
    scripted.reply, scripted.token_delay = LONG_REPLY, 0.02
    emulator = BotApiEmulator(token="779:DELETER", drafts_supported=False)
    await emulator.start()
    try:
        async with emulated_bot(bot_settings(), emulator=emulator, with_model=False) as env:
            ben = emulator.user(7003, "Ben", language_code="en")
            await ben.send_text("stream please")
            streaming = await emulator.wait_for_bot_message(7003, lambda m: "word" in m["text"])
            ben.delete(streaming)
            answer = await emulator.wait_for_bot_message(7003, has_rating_buttons, timeout=20)
            assert answer["text"] == LONG_REPLY
            assert answer["message_id"] != streaming["message_id"]

            def attached(*, session):  # type: ignore[no-untyped-def]
                return [i for i in rows(Interaction)(session=session) if i.telegram_message_id]

            # The message ids are written just after the answer is sent.
            (interaction,) = await wait_db(env.stack.db, attached)
            assert interaction.telegram_message_id == answer["message_id"]
            await ben.press(answer, "👍")
            await wait_db(env.stack.db, rows(Rating))
    finally:
        await emulator.stop()
