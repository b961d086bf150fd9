"""Telegram messages from workers (training reports to admins), through the Bot API."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile
from sqlmodel import Session

from loopgram.db import Database
from loopgram.models import User
from loopgram.run_report import RunReport, build_report
from loopgram.settings import Settings

log = logging.getLogger(__name__)

CAPTION_LIMIT = 1024


def send_run_report(settings: Settings, db: Database, run_id: int) -> int:
    """Send the run's report to every admin; returns how many got it."""
    token = settings.telegram.telegram_bot_token
    admins = settings.access.admin_ids
    if token is None or not admins:
        log.info("report.skipped run_id=%s reason=no token or no ADMIN_IDS", run_id)
        return 0

    def languages(*, session: Session) -> dict[int, str]:
        return {a: (u.language if (u := session.get(User, a)) else "en") for a in admins}

    langs = db.call(languages)
    reports = {
        lang: db.call(build_report, run_id=run_id, lang=lang) for lang in set(langs.values())
    }
    return asyncio.run(_send(settings, token.get_secret_value(), langs, reports))


async def _send(
    settings: Settings, token: str, langs: dict[int, str], reports: dict[str, RunReport]
) -> int:
    api = settings.telegram.telegram_api_url
    session = AiohttpSession(api=TelegramAPIServer.from_base(api)) if api else AiohttpSession()
    bot = Bot(token, session=session)
    sent = 0
    try:
        for admin, lang in langs.items():
            report = reports[lang]
            photo = BufferedInputFile(report.chart_png, filename=f"run-report-{admin}.png")
            try:
                if len(report.text) <= CAPTION_LIMIT:
                    await bot.send_photo(admin, photo, caption=report.text)
                else:
                    await bot.send_photo(admin, photo)
                    await bot.send_message(admin, report.text)
                sent += 1
            except TelegramAPIError as exc:  # an admin who never started the bot, or blocked it
                log.warning("report.not_delivered admin=%s error=%s", admin, exc)
    finally:
        await bot.session.close()
    return sent
