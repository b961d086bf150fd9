"""A CSV/XLSX table sent to the labeling assistant: every row labeled, the file sent back.

The run writes into a file under DATA_DIR keyed by chat and content hash, so sending the
same table again after the model went down continues where it stopped. Progress is one
message, edited as rows complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, Message

from loopgram import labeling
from loopgram.answering import AnswerService
from loopgram.batch_label import BatchLabeler, BatchStoppedError, pick_text_column, read_table
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.settings import Settings

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".xlsx")


def is_table(file_name: str | None) -> bool:
    return (file_name or "").lower().endswith(TABLE_SUFFIXES)


async def label_table(
    message: Message,
    bot: Bot,
    data: bytes,
    *,
    lang: str,
    answers: AnswerService,
    settings: Settings,
) -> None:
    document = message.document
    assert document is not None and message.from_user is not None
    name = document.file_name or "table.csv"
    try:
        table = await asyncio.to_thread(read_table, data, file_name=name)
        column = pick_text_column(table)
    except LoopgramError as exc:
        await message.reply(t(lang, exc.key, **exc.params))
        return
    spec = await answers.db.run(
        labeling.current_spec, chat_id=message.chat.id, chat_type=message.chat.type
    )
    route = await answers.db.run(
        answers.router.route, assistant="label", user_id=message.from_user.id
    )
    digest = hashlib.sha256(data).hexdigest()[:16]
    out = Path(settings.app.data_dir) / "label-jobs" / f"{message.chat.id}-{digest}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    labeler = BatchLabeler(
        answers.llm,
        model=route.model,
        labels=spec,
        lang=lang,
        low_confidence=settings.bot.low_confidence,
        max_chars=settings.bot.max_input_chars,
    )
    status = await message.reply(t(lang, "label-file-progress", done=0, total=len(table.rows)))
    progress = _Progress(bot, status, lang)
    resumed = out.with_name(out.name + ".progress.json").exists()
    try:
        summary = await labeler.run(
            table, column=column, out=out, restart=not resumed, progress=progress
        )
    except BatchStoppedError as exc:
        await _edit(bot, status, t(lang, "label-batch-stopped", **exc.params))
        return
    except LoopgramError as exc:
        await _edit(bot, status, t(lang, exc.key, **exc.params))
        return
    await _edit(
        bot,
        status,
        t(
            lang,
            "label-file-done",
            rows=summary.rows,
            labeled=summary.labeled,
            review=summary.needs_review,
            invalid=summary.invalid,
        ),
    )
    result_name = Path(name).stem + ".labeled.csv"
    await bot.send_document(
        message.chat.id,
        BufferedInputFile(out.read_bytes(), filename=result_name),
        reply_to_message_id=message.message_id,
        message_thread_id=message.message_thread_id if message.is_topic_message else None,
    )
    out.unlink(missing_ok=True)
    log.info(
        "label_file.done chat_id=%s rows=%s needs_review=%s invalid=%s seconds=%.1f",
        message.chat.id,
        summary.rows,
        summary.needs_review,
        summary.invalid,
        summary.seconds,
    )


class _Progress:
    """Edits the status message at most every few seconds (Telegram limits edits)."""

    def __init__(self, bot: Bot, status: Message, lang: str, interval: float = 3.0) -> None:
        self.bot = bot
        self.status = status
        self.lang = lang
        self.interval = interval
        self._last = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval or done >= total:
            return
        self._last = now
        text = t(self.lang, "label-file-progress", done=done, total=total)
        task = asyncio.get_running_loop().create_task(_edit(self.bot, self.status, text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _edit(bot: Bot, status: Message, text: str) -> None:
    try:
        await bot.edit_message_text(text, chat_id=status.chat.id, message_id=status.message_id)
    except TelegramAPIError as exc:  # progress is a courtesy; the result still comes
        log.info("label_file.status_edit_failed error=%s", exc)
