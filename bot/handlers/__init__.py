"""Routers, one per feature, in the order they must be tried."""

from __future__ import annotations

from aiogram import Router

from bot.handlers import (
    admin,
    assistant,
    chat,
    chat_settings,
    commands,
    errors,
    fallback,
    feedback,
    knowledge,
    options,
    privacy,
    review,
)


def get_routers() -> list[Router]:
    """Fresh routers for one dispatcher (a router can belong to one parent only, and tests,
    the demo and the playground build several dispatchers in one process)."""
    # feedback before chat: a comment awaited after 👎 must not be answered as a question.
    modules = (
        errors,
        commands,
        admin,
        privacy,
        knowledge,
        chat_settings,
        assistant,
        review,
        feedback,
        options,
        chat,
        fallback,
    )
    return [_fresh(module.router) for module in modules]


def _fresh(router: Router) -> Router:
    copy = Router(name=router.name)
    for name, observer in router.observers.items():
        copy.observers[name].handlers.extend(observer.handlers)
    return copy
