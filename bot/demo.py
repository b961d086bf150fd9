"""`loopgram demo`: a scripted conversation through the real bot, no token, no network.

The Bot API emulator plays Telegram, the built-in model server answers, the embedded
Celery worker stores the presses. The demo prints the conversation as a user would see it
and then what landed in the database (and in `feedback export`).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlmodel import Session, func, select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.db import Database
from loopgram.emulator import EmulatedChat, EmulatedUser
from loopgram.export import iter_feedback, write_export
from loopgram.models import Interaction, PreferencePair, Rating, ReviewItem
from loopgram.settings import Settings

GROUP_ID = -1001234567890


def _has_buttons(message: dict[str, Any]) -> bool:
    markup = message.get("reply_markup") or {}
    return any(b["text"].startswith("👍") for row in markup.get("inline_keyboard", []) for b in row)


class DemoScript:
    def __init__(self, env: EmulatedBot, console: Console) -> None:
        self.env = env
        self.emu = env.emulator
        self.console = console
        self.anna = self.emu.user(1001, "Anna", language_code="ru", username="anna")
        self.ben = self.emu.user(2002, "Ben", language_code="en", username="ben")
        self.group: EmulatedChat = self.emu.group(GROUP_ID, "Team chat")

    async def ask(
        self, user: EmulatedUser, text: str, *, chat: EmulatedChat | None = None
    ) -> dict[str, Any]:
        chat_id = chat.id if chat else user.id
        self.console.print(f"[bold cyan]👤 {user.first_name}[/]: {text}")
        await user.send_text(text, chat=chat)
        answer = await self.emu.wait_for_bot_message(chat_id, _has_buttons, timeout=120)
        how = (
            f"{len(self.emu.drafts(chat_id))} draft updates in this chat so far"
            if chat is None
            else f"{len(answer.get('edits', []))} edits"
        )
        self.console.print(f"[bold green]🤖 bot[/] [dim](streamed: {how})[/]: {answer['text']}")
        self.console.print("   [dim][ 👍 | 👎 | 🔄 ][/]")
        return answer

    async def say(self, user: EmulatedUser, text: str) -> dict[str, Any]:
        self.console.print(f"[bold cyan]👤 {user.first_name}[/]: {text}")
        await user.send_text(text)
        reply = await self.emu.wait_for_bot_message(user.id, timeout=30)
        self.console.print(f"[bold green]🤖 bot[/]: {reply['text']}")
        return reply

    async def press(self, user: EmulatedUser, message: dict[str, Any], button: str) -> str:
        before = len(self.emu.callback_answers)
        await user.press(message, button)
        await self.emu.wait_for(lambda: len(self.emu.callback_answers) > before, timeout=30)
        alert = self.emu.callback_answers[-1].get("text", "")
        self.console.print(
            f"[bold cyan]👤 {user.first_name}[/] presses {button} → [italic]{alert}[/]"
        )
        return str(alert)

    async def run(self) -> None:
        emu, anna, ben = self.emu, self.anna, self.ben
        await self.say(anna, "/start")
        first = await self.ask(anna, "Привет! Как лучше спланировать рабочую неделю?")
        await self.press(anna, first, "👍")

        answer = await self.ask(ben, "How do I write a good summary of a long report?")
        await self.press(ben, answer, "👎")
        reasons = await emu.wait_for_bot_message(ben.id, lambda m: "reply_markup" in m, timeout=30)
        await self.press(ben, reasons, "🤷 Unhelpful")
        await emu.wait_for_bot_message(ben.id, lambda m: "/skip" in m.get("text", ""), timeout=30)
        await self.say(ben, "Start with the key points, then add the details.")

        await self.press(ben, answer, "🔄")
        second = await emu.wait_for_bot_message(ben.id, _has_buttons, timeout=120)
        self.console.print(f"[bold green]🤖 bot[/] [dim](another version)[/]: {second['text']}")
        await self.press(ben, second, "👍")

        await self.ask(anna, "@loopgram_bot что такое ретроспектива?", chat=self.group)
        self.console.print(f"[bold cyan]👤 {ben.first_name}[/] sends a sticker")
        sticker = await ben.send_sticker()
        sticker_reply = await emu.wait_for_bot_message(
            ben.id,
            lambda m: (m.get("reply_to_message") or {}).get("message_id") == sticker["message_id"],
            timeout=30,
        )
        self.console.print(f"[bold green]🤖 bot[/]: {sticker_reply['text']}")


def _counts(*, session: Session) -> dict[str, int]:
    def count(model: Any) -> int:
        return int(session.exec(select(func.count()).select_from(model)).one())

    return {
        "interactions": count(Interaction),
        "ratings": count(Rating),
        "preference_pairs": count(PreferencePair),
        "review_items": count(ReviewItem),
    }


async def _wait_for_worker(db: Database, expected_ratings: int, within: float = 60.0) -> None:
    """The worker stores presses asynchronously; wait until all of them landed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:

        def done(*, session: Session) -> bool:
            ratings = session.exec(select(Rating)).all()
            return len(ratings) >= expected_ratings and any(r.comment for r in ratings)

        if await db.run(done):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the worker did not store every rating in time")


def _print_stored(console: Console, db: Database) -> tuple[dict[str, int], list[str]]:
    with db.session() as session:
        counts = _counts(session=session)
        table = Table(title="Stored ratings (the reward buffer)")
        for column in ("interaction", "user", "rating", "reason", "comment"):
            table.add_column(column)
        for rating in session.exec(select(Rating).order_by(Rating.id)).all():  # type: ignore[arg-type]
            table.add_row(
                str(rating.interaction_id),
                str(rating.user_id),
                "👍" if rating.value > 0 else "👎",
                rating.reason or "",
                rating.comment or "",
            )
        console.print(table)
        for pair in session.exec(select(PreferencePair)).all():
            console.print(
                f"[bold]preference pair[/] ({pair.source}): chosen #{pair.chosen_interaction_id} "
                f"> rejected #{pair.rejected_interaction_id}"
            )
        buffer = io.StringIO()
        write_export(iter_feedback(session=session), buffer, fmt="jsonl")
    lines = buffer.getvalue().splitlines()
    console.print(f"[bold]counts[/]: {counts}")
    console.print("[bold]loopgram feedback export --format jsonl[/] (first line):")
    if lines:
        console.print(lines[0], markup=False, highlight=False)
    return counts, lines


def _fresh_dir(path: Path) -> None:
    # The converted base model is kept between runs: converting takes half a minute.
    models = path / "models"
    for child in path.iterdir() if path.exists() else []:
        if child != models:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)


async def run_demo(settings: Settings, *, data_dir: Path, quiet: bool = False) -> dict[str, Any]:
    await asyncio.to_thread(_fresh_dir, data_dir)
    settings = replace(
        settings,
        app=settings.app.model_copy(update={"data_dir": data_dir}),
        db=settings.db.model_copy(update={"database_url": f"sqlite:///{data_dir / 'loopgram.db'}"}),
        redis=settings.redis.model_copy(update={"redis_url": None}),
        bot=settings.bot.model_copy(update={"stream_edit_interval": 0.3}),
        # Short answers keep the demo to a minute or two on a 2-core CPU.
        llm=settings.llm.model_copy(update={"llm_max_tokens": 80}),
        telegram=settings.telegram.model_copy(update={"bot_mode": "polling"}),
    )
    console = Console(quiet=quiet, highlight=False)
    console.rule("loopgram demo: the real bot, a local Telegram emulator, the built-in model")
    started = time.monotonic()
    async with emulated_bot(settings) as env:
        await DemoScript(env, console).run()
        await _wait_for_worker(env.stack.db, expected_ratings=3)
        console.rule("What was stored")
        counts, lines = _print_stored(console, env.stack.db)
    elapsed = time.monotonic() - started
    console.print(f"[bold green]demo finished in {elapsed:.1f} s[/]; data in {data_dir}")
    return {"counts": counts, "export": lines, "seconds": round(elapsed, 1)}
