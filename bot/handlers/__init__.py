"""Routers, one per feature, in the order they must be tried."""

from __future__ import annotations

from aiogram import Router

from bot.handlers import assistant, chat, commands, errors, fallback, feedback


def get_routers() -> list[Router]:
    # feedback before chat: a comment awaited after 👎 must not be answered as a question.
    return [
        errors.router,
        commands.router,
        assistant.router,
        feedback.router,
        chat.router,
        fallback.router,
    ]
