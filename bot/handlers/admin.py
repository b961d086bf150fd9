"""Admin commands for the learning loop: /adapters, /deploy, /rollback, /train.

The role is read from the database for the person sending the command, wherever it is sent.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from celery import Celery

from bot.filters import AddressedToBot
from bot.permissions import is_admin
from loopgram import adapters
from loopgram.adapter_server import AdapterServerError, HttpAdapterServer
from loopgram.assistants import ASSISTANTS
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import User
from loopgram.settings import Settings

router = Router(name=__name__)


def _server(settings: Settings) -> HttpAdapterServer:
    return HttpAdapterServer.from_settings(settings)


@router.message(Command("adapters", "deploy", "rollback", "train"), AddressedToBot())
async def on_admin_command(
    message: Message,
    command: CommandObject,
    lang: str,
    user_record: User | None,
    db: Database,
    settings: Settings,
    celery_app: Celery,
) -> None:
    if not is_admin(user_record):
        await message.reply(t(lang, "admin-only"))
        return
    arg = (command.args or "").split()
    name = command.command.lower()
    try:
        if name == "adapters":
            rows = await db.run(adapters.list_adapters, assistant=arg[0] if arg else None)
            lines = [t(lang, "adapters-line", name=a.name, status=str(a.status)) for a in rows]
            await message.reply("\n".join(lines) or t(lang, "adapters-none"))
        elif name == "deploy":
            if not arg:
                await message.reply(t(lang, "adapters-usage-deploy"))
                return
            adapter = await db.run(
                adapters.deploy,
                name=arg[0],
                server=_server(settings),
                canary="--now" not in arg,
                actor_id=message.from_user.id if message.from_user else None,
            )
            await message.reply(
                t(lang, "adapters-deployed", name=adapter.name, status=str(adapter.status))
            )
        elif name == "rollback":
            if not arg or arg[0] not in ASSISTANTS:
                await message.reply(t(lang, "adapters-usage-rollback"))
                return
            current = await db.run(
                adapters.rollback,
                assistant=arg[0],
                server=_server(settings),
                actor_id=message.from_user.id if message.from_user else None,
            )
            label = current.name if current else t(lang, "adapters-base-model")
            await message.reply(t(lang, "adapters-rolled-back", assistant=arg[0], current=label))
        else:
            method = arg[1] if len(arg) > 1 else "dpo"
            if not arg or arg[0] not in ASSISTANTS or method not in ("dpo", "orpo", "kto"):
                await message.reply(t(lang, "adapters-usage-train"))
                return
            celery_app.send_task(
                "loopgram.train_assistant", args=[arg[0], method], queue="training"
            )
            await message.reply(t(lang, "train-queued", assistant=arg[0], method=method))
    except AdapterServerError as exc:
        await message.reply(t(lang, "error-adapter-server", detail=str(exc)[:300]))
    except LoopgramError as exc:
        await message.reply(t(lang, exc.key, detail=str(exc), **exc.params))
