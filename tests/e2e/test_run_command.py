"""`loopgram run` as a user starts it: one process, token set, no servers installed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlmodel import select

from loopgram.db import Database
from loopgram.emulator import BotApiEmulator
from loopgram.models import Rating
from loopgram.settings import DatabaseSettings
from tests.e2e.conftest import has_rating_buttons
from tests.e2e.test_webhook import free_port


async def test_loopgram_run_answers_and_stores_a_rating(tmp_path: Path) -> None:
    async with BotApiEmulator(token="990:RUN-COMMAND-TEST") as emu:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATABASE_", "REDIS_", "LLM_"))
            },
            "TELEGRAM_BOT_TOKEN": emu.token,
            "TELEGRAM_API_URL": emu.api_url,
            "BUILTIN_MODEL_PORT": str(free_port()),
            # The command is under test here, not the model: the fast placeholder serves.
            "BASE_MODEL_PATH": "ngram",
        }
        log = (tmp_path / "run.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loopgram.cli",
            "run",
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            ben = emu.user(8001, "Ben", language_code="en")
            await ben.send_text("Tell me about teamwork")
            answer = await emu.wait_for_bot_message(8001, has_rating_buttons, timeout=60)
            assert answer["text"].strip()
            await ben.press(answer, "👍")
            db = Database.from_settings(
                DatabaseSettings(database_url=f"sqlite:///{tmp_path / 'data' / 'loopgram.db'}")
            )
            for _ in range(100):
                if db.call(lambda *, session: session.exec(select(Rating)).first()):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError((tmp_path / "run.log").read_text()[-3000:])
            db.dispose()
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=30)
            log.close()
        assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
