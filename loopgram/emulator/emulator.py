"""BotApiEmulator: start/stop the local Bot API server and drive and inspect it from Python."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from loopgram.http_site import start_site

from .clock import Clock
from .core import ApiCall, EmulatorConfig, EmulatorCore
from .incoming import ingest_raw_update
from .server import ApiServer
from .state import EmulatedChat, commands_key
from .updates import UpdateQueue, time_based_first_id
from .users import EmulatedUser

JsonDict = dict[str, Any]
_POLL_INTERVAL = 0.01


class BotApiEmulator:
    def __init__(
        self,
        token: str = "123456:TEST",  # noqa: S107 - a test token, not a secret
        bot_username: str = "loopgram_bot",
        bot_id: int | None = None,
        drafts_supported: bool = True,
        enforce_limits: bool = False,
        first_update_id: int | None = None,
        *,
        bot_first_name: str | None = None,
        privacy_mode: bool = False,
        webhook_retry_delays: Sequence[float] = (0.1, 0.2, 0.4, 0.8, 1.6),
    ) -> None:
        """``privacy_mode=True`` hides group messages a privacy-mode bot would not get (the
        BotFather default); off by default, as for a bot that has it disabled."""
        if bot_id is None:
            prefix = token.partition(":")[0]
            if not prefix.isdigit():
                raise ValueError("token must look like '<bot_id>:<secret>' or bot_id be given")
            bot_id = int(prefix)
        bot_user: JsonDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_first_name
            or bot_username.removesuffix("_bot").replace("_", " ").title()
            or "Bot",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": not privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self._clock = Clock()
        config = EmulatorConfig(
            token,
            bot_user,
            drafts_supported,
            enforce_limits,
            privacy_mode,
            tuple(webhook_retry_delays),
        )
        first_id = first_update_id if first_update_id is not None else time_based_first_id()
        self._core = EmulatorCore(config, self._clock, UpdateQueue(first_id))
        self._runner: web.AppRunner | None = None
        self._api_url: str | None = None
        # per chat: outputs before this index were consumed by wait_for_bot_message
        self._output_cursor: dict[int, int] = {}
        self._users: dict[int, EmulatedUser] = {}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._core.closing = False
        runner, bound_host, bound_port = await start_site(
            ApiServer(self._core).build_app(), host, port, access_log=None
        )
        self._runner = runner
        self._api_url = f"http://{_url_host(str(bound_host))}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving; long polls in progress answer at once with no updates."""
        self._core.closing = True
        self._core.updates.notify()
        await self._core.webhook.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> BotApiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """Base URL for aiogram's ``TelegramAPIServer.from_base``."""
        if self._api_url is None:
            raise RuntimeError("emulator is not started")
        return self._api_url

    @property
    def token(self) -> str:
        return self._core.config.token

    @property
    def bot_user(self) -> JsonDict:
        return copy.deepcopy(self._core.config.bot_user)

    # --- actors -----------------------------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "User",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_premium: bool = False,
    ) -> EmulatedUser:
        """Create a user (or return the one with this id)."""
        if user_id in self._users:
            return self._users[user_id]
        user = EmulatedUser(
            self._core,
            user_id,
            first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            is_premium=is_premium,
        )
        self._users[user_id] = user
        return user

    def group(
        self,
        chat_id: int,
        title: str = "Group",
        *,
        username: str | None = None,
        is_forum: bool = False,
        bot_is_admin: bool = False,
        admin_ids: tuple[int, ...] = (),
    ) -> EmulatedChat:
        """A supergroup the bot is a member of (`admin_ids`: its human administrators)."""
        chat = EmulatedChat(
            chat_id,
            "supergroup",
            title=title,
            username=username,
            is_forum=is_forum,
            bot_is_admin=bot_is_admin,
            admin_ids=set(admin_ids),
        )
        self._core.state.add_chat(chat)
        return chat

    def private_chat(self, user: EmulatedUser) -> EmulatedChat:
        return user.chat

    def push_update(self, update: JsonDict) -> int:
        """Queue a raw Update (update_id assigned when missing); returns its update_id."""
        return ingest_raw_update(self._core, update)

    # --- inspection -------------------------------------------------------------------------

    def chat_messages(self, chat_id: int) -> list[JsonDict]:
        """Messages of the chat in order, bot's and users', each with its "edits" history."""
        chat = self._core.state.chats.get(chat_id)
        return chat.snapshots() if chat else []

    def bot_messages(self, chat_id: int) -> list[JsonDict]:
        chat = self._core.state.chats.get(chat_id)
        return chat.snapshots(bot_only=True) if chat else []

    def drafts(self, chat_id: int) -> list[JsonDict]:
        """Latest draft per draft_id, each with the "history" of its texts."""
        return [d.to_dict() for d in self._core.state.drafts.values() if d.chat_id == chat_id]

    def chat_actions(self, chat_id: int) -> list[JsonDict]:
        return [dict(a) for a in self._core.state.chat_actions if a["chat_id"] == chat_id]

    def my_commands(
        self, scope: JsonDict | None = None, language_code: str | None = None
    ) -> list[JsonDict]:
        return copy.deepcopy(self._core.state.commands.get(commands_key(scope, language_code), []))

    def file_bytes(self, file_id: str) -> bytes:
        stored = self._core.state.files.get(file_id)
        if stored is None:
            raise KeyError(file_id)
        return stored.data

    @property
    def callback_answers(self) -> list[JsonDict]:
        return copy.deepcopy(self._core.state.callback_answers)

    @property
    def calls(self) -> list[ApiCall]:
        return list(self._core.calls)

    @property
    def pending_updates(self) -> list[JsonDict]:
        return copy.deepcopy(self._core.updates.pending)

    @property
    def limit_violations(self) -> int:
        return self._core.flood.violations

    @property
    def webhook_deliveries(self) -> list[JsonDict]:
        """Updates the webhook accepted (2xx), in order."""
        return copy.deepcopy(self._core.webhook.delivered)

    @property
    def webhook_failures(self) -> list[JsonDict]:
        """Updates given up after every webhook retry failed."""
        return copy.deepcopy(self._core.webhook.given_up)

    # --- test controls ----------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" for any) with this error."""
        self._core.faults.add(method, error_code, description, retry_after, times)

    def advance_time(self, seconds: float) -> None:
        """Move the emulator's clock (dates, callback query age, flood windows)."""
        self._clock.advance(seconds)

    # The timeout parameter is the documented test API, hence the ASYNC109 waivers.
    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> None:
        """Poll ``predicate`` until true; TimeoutError says what the bot did meanwhile."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() >= deadline:
                name = getattr(predicate, "__name__", repr(predicate))
                raise TimeoutError(
                    f"condition {name} not met within {timeout}s; {self._activity()}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def wait_for_bot_message(
        self,
        chat_id: int,
        predicate: Callable[[JsonDict], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> JsonDict:
        """The next bot message or edit in the chat (after those returned before) that
        satisfies ``predicate``; earlier non-matching ones in that chat are skipped."""
        outputs = self._core.state.outputs
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index in range(self._output_cursor.get(chat_id, 0), len(outputs)):
                output = outputs[index]
                if output.chat_id == chat_id and (predicate is None or predicate(output.message)):
                    self._output_cursor[chat_id] = index + 1
                    return copy.deepcopy(output.message)
            if asyncio.get_running_loop().time() >= deadline:
                texts = [
                    m.get("text", m.get("caption", "<media>")) for m in self.bot_messages(chat_id)
                ]
                raise TimeoutError(
                    f"no matching bot message in chat {chat_id} within "
                    f"{timeout}s; bot messages there: {texts}; "
                    f"{self._activity()}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def _activity(self) -> str:
        recent = [c.summary() for c in self._core.calls if c.method != "getUpdates"][-8:]
        return (
            f"pending updates: {len(self._core.updates.pending)}; "
            f"last API calls: {' | '.join(recent) or 'none'}"
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
