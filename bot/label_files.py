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
import weakref
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, Message

from loopgram import label_review, labeling
from loopgram.answering import AnswerService
from loopgram.batch_label import (
    BatchLabeler,
    BatchStoppedError,
    BatchSummary,
    LabelOutputError,
    Table,
    pick_text_column,
    read_table,
)
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.settings import Settings

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".xlsx")

# One run at a time per working file; an entry lives while a run holds or awaits its lock.
_jobs: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()


def _job_lock(out: Path) -> asyncio.Lock:
    lock = _jobs.get(out)
    if lock is None:
        lock = _jobs[out] = asyncio.Lock()
    return lock


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
    label_set_id, spec = await answers.db.run(
        labeling.current_set, chat_id=message.chat.id, chat_type=message.chat.type
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
    # The same table sent again while it is being labeled shares the working file: wait
    # for the first run to finish (it sends its result and removes the file), then start.
    async with _job_lock(out):
        try:
            summary = await _run(labeler, table, column=column, out=out, progress=progress)
        except BatchStoppedError as exc:
            await _edit(bot, status, t(lang, "label-batch-stopped", **exc.params))
            return
        except LoopgramError as exc:
            await _edit(bot, status, t(lang, exc.key, **exc.params))
            return
        done = t(
            lang,
            "label-file-done",
            rows=summary.rows,
            labeled=summary.labeled,
            review=summary.needs_review,
            invalid=summary.invalid,
        )
        queued = await _queue_for_review(
            labeler,
            answers,
            summary,
            table=table,
            column=column,
            message=message,
            label_set_id=label_set_id,
            model=route.model,
            digest=digest,
            file_name=name,
        )
        await _edit(bot, status, "\n".join([done, *_queued_lines(lang, queued, summary)]))
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


async def _run(
    labeler: BatchLabeler, table: Table, *, column: int, out: Path, progress: _Progress
) -> BatchSummary:
    """Continue a stopped run of this table, else label it from the start."""
    if out.with_name(out.name + ".progress.json").exists():
        try:
            return await labeler.run(table, column=column, out=out, progress=progress)
        except LabelOutputError as exc:
            # The stopped run cannot be continued: its rows were labeled with another label
            # set (the chat's changed since) or its file is damaged. The file is the bot's
            # own, so start over; refusing would refuse this table for good, with the CLI's
            # --restart advice.
            log.info("label_file.resume_refused out=%s error=%s", out, exc)
    return await labeler.run(table, column=column, out=out, restart=True, progress=progress)


async def _queue_for_review(
    labeler: BatchLabeler,
    answers: AnswerService,
    summary: BatchSummary,
    *,
    table: Table,
    column: int,
    message: Message,
    label_set_id: int | None,
    model: str | None,
    digest: str,
    file_name: str,
) -> int | None:
    """The rows a person should check, as review items (the first MAX_ROWS of them); how
    many were queued, None when the database refused them (the result file still says
    which rows need a person)."""
    assert message.from_user is not None
    rows = []
    for index, result in summary.to_review[: label_review.MAX_ROWS]:
        text = table.rows[index][column].strip()
        rows.append(
            label_review.RowToReview(
                line=index + 2,  # the header is line 1
                text=text,
                messages=await labeler.messages_for(text),
                label=result.label,
                confidence=result.confidence,
                error=result.error,
            )
        )
    if not rows:
        return 0
    try:
        return await answers.db.run(
            label_review.queue_rows,
            rows=rows,
            chat_id=message.chat.id,
            user_id=message.from_user.id,
            label_set_id=label_set_id,
            model=model or "",
            table=digest,
            file_name=file_name,
        )
    except Exception as exc:  # the labels are done and in the file: never lose them for this
        log.warning("label_file.review_queue_failed chat_id=%s error=%s", message.chat.id, exc)
        return None


def _queued_lines(lang: str, queued: int | None, summary: BatchSummary) -> list[str]:
    wanted = len(summary.to_review)
    if queued is None:
        return [t(lang, "label-file-review-failed")]
    if not wanted:
        return []
    if not queued:
        return [t(lang, "label-file-queued-before")]
    if wanted > label_review.MAX_ROWS:
        return [t(lang, "label-file-queued-first", count=queued, total=wanted)]
    return [t(lang, "label-file-queued", count=queued)]


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
