"""The bot restarted in webhook mode: what Telegram delivers again is processed once, and
what it could not deliver while the bot was down is processed after the restart.

One emulated Telegram outlives two bot processes' worth of stacks on the same database.
Telegram re-delivers an update when it did not get the 2xx (the bot died, or the answer was
lost on the way): the test pushes the same update ids again to play that part.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from sqlmodel import select

from bot.emulated import emulated_bot
from loopgram.emulator import BotApiEmulator
from loopgram.models import Interaction, Rating
from tests.faults.conftest import free_port, has_rating_buttons

SECRET = "faults-webhook-secret"


def _rows(model: Any) -> Any:
    return lambda *, session: list(session.exec(select(model)).all())


async def test_a_restarted_webhook_bot_processes_redelivered_updates_once(
    bot_settings,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    settings = bot_settings(
        BOT_MODE="webhook",
        WEBHOOK_URL=f"http://127.0.0.1:{port}/tg/webhook",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_HOST="127.0.0.1",
        WEBHOOK_PORT=str(port),
    )
    # Telegram keeps retrying a webhook that is down; the restart fits in these delays.
    async with BotApiEmulator(
        token="424242:FAULTS", webhook_retry_delays=(0.2, 0.5, 1, 2, 4, 8)
    ) as emu:
        ann = emu.user(7301, "Ann", language_code="en")
        async with emulated_bot(settings, emulator=emu, with_model=False) as env:
            await ann.send_text("first question")
            answer = await emu.wait_for_bot_message(7301, has_rating_buttons, timeout=20)
            await ann.press(answer, "👍")
            await emu.wait_for(lambda: len(emu.callback_answers) == 1)
            delivered = emu.webhook_deliveries
            db = env.stack.db
            await asyncio.sleep(0.5)
            assert len(await db.run(_rows(Rating))) == 1

        # The bot is down. Telegram did not hear the 2xx for the last two updates (say) and
        # delivers them again; meanwhile Ann asks something new. Nothing reaches the bot yet.
        for update in delivered[-2:]:
            emu.push_update(copy.deepcopy(update))
        await ann.send_text("second question, while the bot restarts")
        await asyncio.sleep(0.5)
        assert emu.webhook_failures == []  # still retrying, not given up

        async with emulated_bot(settings, emulator=emu, with_model=False) as env:
            db = env.stack.db
            second = await emu.wait_for_bot_message(
                7301,
                lambda m: has_rating_buttons(m) and m["message_id"] != answer["message_id"],
                timeout=30,
            )
            await ann.press(second, "👎")
            await emu.wait_for(lambda: not emu.pending_updates, timeout=30)
            await asyncio.sleep(1.0)
            prompts = sorted(i.prompt for i in await db.run(_rows(Interaction)))
            ratings = sorted((r.interaction_id, r.value) for r in await db.run(_rows(Rating)))
        assert emu.webhook_failures == []
    assert prompts == ["first question", "second question, while the bot restarts"]
    assert [value for _, value in ratings] == [1, -1]
    assert len(emu.callback_answers) == 2  # the re-delivered press was not answered again
