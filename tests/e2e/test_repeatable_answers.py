"""The bot names each asker to the model server by a pseudonym (OpenAI's `user` field), so
a server run with `--seed` answers each person's k-th ask of a conversation alike in every
run, whoever else asks the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.emulated import emulated_bot
from loopgram.privacy import end_user_id, end_user_key
from tests.e2e.conftest import has_rating_buttons
from training.model_server.app import create_app, start_server
from training.model_server.sampling_seeds import ContentSeeds
from training.model_server.scripted import ScriptedBackend

QUESTION = "Как спланировать рабочую неделю?"


async def test_each_person_gets_their_own_seeded_draws(
    bot_settings: Callable[..., Any],
) -> None:
    scripted = ScriptedBackend("План: три главные задачи на неделю.")
    runner, url = await start_server(create_app(scripted, sampling_seed=9), "127.0.0.1", 0)
    try:
        async with emulated_bot(bot_settings(LLM_BASE_URL=url), with_model=False) as env:
            emu = env.emulator
            for user_id in (2001, 2002, 2001):  # Anna, Boris, Anna again
                person = emu.user(user_id, f"user{user_id}", language_code="ru")
                before = len([m for m in emu.bot_messages(user_id) if has_rating_buttons(m)])
                await person.send_text(QUESTION)
                await emu.wait_for(
                    lambda uid=user_id, n=before: (
                        len([m for m in emu.bot_messages(uid) if has_rating_buttons(m)]) > n
                    )
                )
            token = env.stack.settings.telegram.telegram_bot_token
    finally:
        await runner.cleanup()

    assert token is not None
    key = end_user_key(token.get_secret_value())
    anna, boris = end_user_id(key, 2001), end_user_id(key, 2002)
    assert anna != boris and "2001" not in anna
    requests = scripted.requests
    assert len(requests) == 3
    # The server seeded each ask by its asker: replaying the asks in another order (Boris
    # first) through the same seeds gives each the same draw.
    replay = ContentSeeds(9)
    boris_first = replay.next_seed(requests[1].messages, user=boris)
    anna_first = replay.next_seed(requests[0].messages, user=anna)
    anna_again = replay.next_seed(requests[2].messages, user=anna)
    assert [r.seed for r in requests] == [anna_first, boris_first, anna_again]
    assert requests[0].messages == requests[1].messages  # the same question, two seeds
    assert len({anna_first, boris_first, anna_again}) == 3
