"""Per-chat configuration: which assistants are on, group moderation, the label set.

Allowed for bot admins anywhere and for a group's own Telegram administrators in that
group. The role is checked for the person sending the command, every time.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.filters import AddressedToBot
from bot.permissions import is_admin
from loopgram import crud, labeling
from loopgram.assistants import ASSISTANTS, DEFAULT_ASSISTANT
from loopgram.assistants.label import (
    LabelSetError,
    LabelSetSpec,
    parse_label_list,
    parse_label_yaml,
)
from loopgram.db import Database
from loopgram.i18n import t
from loopgram.models import User

log = logging.getLogger(__name__)
router = Router(name=__name__)

MODERATION_ACTIONS = ("none", "warn", "delete")
MAX_LABEL_FILE_BYTES = 100_000


async def can_configure(message: Message, bot: Bot, user_record: User | None) -> bool:
    if is_admin(user_record):
        return True
    if message.chat.type == ChatType.PRIVATE or message.from_user is None:
        return False
    try:
        member = await bot.get_chat_member(message.chat.id, message.from_user.id)
    except TelegramAPIError as exc:
        log.info("chat_settings.member_lookup_failed chat_id=%s error=%s", message.chat.id, exc)
        return False
    return member.status in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR)


@router.message(Command("enable", "disable"), AddressedToBot())
async def on_enable(
    message: Message,
    command: CommandObject,
    bot: Bot,
    lang: str,
    db: Database,
    user_record: User | None,
) -> None:
    if not await can_configure(message, bot, user_record):
        await message.reply(t(lang, "chat-admin-only"))
        return
    name = (command.args or "").strip().lower()
    chat = await db.run(
        crud.get_or_create_chat, chat_id=message.chat.id, chat_type=message.chat.type
    )
    if name not in ASSISTANTS or name == DEFAULT_ASSISTANT:
        states = ", ".join(
            f"{a}{' ✗' if a in chat.disabled_assistants else ' ✓'}"
            for a in ASSISTANTS
            if a != DEFAULT_ASSISTANT
        )
        await message.reply(t(lang, "assistants-usage", states=states))
        return
    enabled = command.command.lower() == "enable"
    assert message.from_user is not None
    await db.run(
        crud.set_assistant_enabled,
        chat_id=message.chat.id,
        chat_type=message.chat.type,
        assistant=name,
        enabled=enabled,
        actor_id=message.from_user.id,
    )
    key = "assistant-enabled" if enabled else "assistant-disabled-now"
    await message.reply(t(lang, key, title=ASSISTANTS[name].title(lang)))


@router.message(Command("moderation"), AddressedToBot())
async def on_moderation(
    message: Message,
    command: CommandObject,
    bot: Bot,
    lang: str,
    db: Database,
    user_record: User | None,
) -> None:
    if not await can_configure(message, bot, user_record):
        await message.reply(t(lang, "chat-admin-only"))
        return
    assert message.from_user is not None
    args = (command.args or "").lower().split()
    changes: dict[str, object] = {}
    if args and args[0] in ("on", "off"):
        changes["enabled"] = args[0] == "on"
    elif len(args) == 2 and args[0] == "action" and args[1] in MODERATION_ACTIONS:
        changes["action"] = args[1]
    elif len(args) == 2 and args[0] == "threshold":
        try:
            threshold = float(args[1].replace(",", "."))
        except ValueError:
            threshold = -1.0
        if not 0.5 <= threshold <= 1.0:
            await message.reply(t(lang, "moderation-usage"))
            return
        changes["threshold"] = threshold
    elif args:
        await message.reply(t(lang, "moderation-usage"))
        return
    if changes:
        if message.chat.type == ChatType.PRIVATE and changes.get("enabled"):
            await message.reply(t(lang, "moderation-groups-only"))
            return
        chat = await db.run(
            crud.set_moderation,
            chat_id=message.chat.id,
            chat_type=message.chat.type,
            actor_id=message.from_user.id,
            **changes,
        )
    else:
        chat = await db.run(
            crud.get_or_create_chat, chat_id=message.chat.id, chat_type=message.chat.type
        )
    await message.reply(
        t(
            lang,
            "moderation-status",
            state=t(lang, "state-on" if chat.moderation_enabled else "state-off"),
            action=t(lang, f"moderation-action-{chat.moderation_action}"),
            threshold=f"{chat.moderation_threshold:.2f}",
        )
    )


# F.text: aiogram's Command reads a caption too, and a file captioned /labels is `on_labels_file`'s.
@router.message(Command("labels"), F.text, AddressedToBot())
async def on_labels(
    message: Message,
    command: CommandObject,
    bot: Bot,
    lang: str,
    db: Database,
    user_record: User | None,
) -> None:
    args = (command.args or "").strip()
    if not args:
        current = await db.run(
            labeling.current_spec, chat_id=message.chat.id, chat_type=message.chat.type
        )
        await message.reply(_describe(current, lang))
        return
    if not await can_configure(message, bot, user_record):
        await message.reply(t(lang, "chat-admin-only"))
        return
    spec: LabelSetSpec | None = None
    try:
        if args.lower() != "default":
            spec = parse_label_list(args)
    except LabelSetError as exc:
        await message.reply(t(lang, exc.key, detail=exc.detail(lang), **exc.params))
        return
    await _save(message, db, spec, lang)


@router.message(F.document, F.caption.startswith("/labels"), AddressedToBot())
async def on_labels_file(
    message: Message, bot: Bot, lang: str, db: Database, user_record: User | None
) -> None:
    """A YAML file with `/labels` as its caption defines the chat's label set."""
    if not await can_configure(message, bot, user_record):
        await message.reply(t(lang, "chat-admin-only"))
        return
    document = message.document
    assert document is not None
    name = (document.file_name or "").lower()
    if not name.endswith((".yaml", ".yml")):
        await message.reply(t(lang, "labels-file-yaml"))
        return
    if (document.file_size or 0) > MAX_LABEL_FILE_BYTES:
        await message.reply(t(lang, "file-too-big", limit_kb=MAX_LABEL_FILE_BYTES // 1000))
        return
    buffer = await bot.download(document)
    try:
        spec = parse_label_yaml(buffer.read() if buffer is not None else b"")
    except LabelSetError as exc:
        await message.reply(t(lang, exc.key, detail=exc.detail(lang), **exc.params))
        return
    await _save(message, db, spec, lang)


async def _save(message: Message, db: Database, spec: LabelSetSpec | None, lang: str) -> None:
    assert message.from_user is not None
    saved = await db.run(
        labeling.assign_label_set,
        chat_id=message.chat.id,
        chat_type=message.chat.type,
        spec=spec,
        actor_id=message.from_user.id,
    )
    await message.reply(t(lang, "labels-saved") + "\n" + _describe(saved, lang))


def _describe(spec: LabelSetSpec, lang: str) -> str:
    lines = [
        f"• {label.name}" + (f" — {label.description}" if label.description else "")
        for label in spec.labels
    ]
    return t(lang, "labels-current", name=spec.name) + "\n" + "\n".join(lines)
