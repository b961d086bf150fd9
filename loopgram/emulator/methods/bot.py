"""getMe, bot commands, close, logOut."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from ..errors import bad_request
from ..state import commands_key
from .registry import api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)


@api_method("getMe")
async def get_me(core: EmulatorCore, p: Params) -> dict[str, Any]:
    return copy.deepcopy(core.config.bot_user)


def _key(p: Params) -> tuple[str, str]:
    scope = p.json_value("scope", "can't parse BotCommandScope JSON object")
    if scope is not None and (not isinstance(scope, dict) or scope.get("type") not in _SCOPES):
        raise bad_request("wrong bot command scope type specified")
    language = p.text("language_code") or ""
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise bad_request("invalid language code specified")
    return commands_key(scope, language)


@api_method("setMyCommands")
async def set_my_commands(core: EmulatorCore, p: Params) -> bool:
    raw = p.json_value("commands", "can't parse commands JSON object")
    if not isinstance(raw, list):
        raise bad_request("can't parse commands JSON object")
    if len(raw) > 100:
        raise bad_request("too many commands specified")
    commands: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise bad_request("can't parse BotCommand JSON object")
        command = str(item.get("command", "")).lstrip("/")
        description = str(item.get("description", "")).strip()
        if not _COMMAND.match(command):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        commands.append({"command": command, "description": description})
    key = _key(p)
    if commands:
        core.state.commands[key] = commands
    else:
        core.state.commands.pop(key, None)
    return True


@api_method("getMyCommands")
async def get_my_commands(core: EmulatorCore, p: Params) -> list[dict[str, Any]]:
    return copy.deepcopy(core.state.commands.get(_key(p), []))


@api_method("deleteMyCommands")
async def delete_my_commands(core: EmulatorCore, p: Params) -> bool:
    core.state.commands.pop(_key(p), None)
    return True


@api_method("close")
async def close(core: EmulatorCore, p: Params) -> bool:
    return True


@api_method("logOut")
async def log_out(core: EmulatorCore, p: Params) -> bool:
    return True
