"""The emulated server's shared context and the one path every method call takes:
lookup -> injected fault -> handler -> recorded ApiCall -> Bot API response."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .errors import ApiError, forbidden, method_not_found, too_many_requests
from .limits import FaultInjector, FloodControl
from .methods import lookup
from .methods.registry import Described
from .params import Params
from .state import ChatState, EmulatorState, StoredMessage
from .updates import UpdateQueue
from .webhook import WebhookDeliverer

JsonDict = dict[str, Any]
logger = logging.getLogger(__name__)


@dataclass
class EmulatorConfig:
    token: str
    bot_user: JsonDict
    drafts_supported: bool = True
    enforce_limits: bool = False
    privacy_mode: bool = False
    webhook_retry_delays: Sequence[float] = (0.1, 0.2, 0.4, 0.8, 1.6)


@dataclass
class ApiCall:
    """One method call the bot made, as the emulator answered it."""

    index: int
    method: str
    params: JsonDict
    result: Any = None
    error: JsonDict | None = None  # {"error_code", "description"[, "retry_after"]}
    time: float = 0.0  # Clock.monotonic() when the call arrived
    source: str = "http"  # "http" or "webhook_response"

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> JsonDict:
        return {
            "index": self.index,
            "method": self.method,
            "params": self.params,
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
            "time": self.time,
            "source": self.source,
        }

    def summary(self) -> str:
        if self.error is None:
            return f"{self.method} -> ok"
        return f"{self.method} -> {self.error['error_code']} {self.error['description']}"


@dataclass
class EmulatorCore:
    config: EmulatorConfig
    clock: Clock
    updates: UpdateQueue
    state: EmulatorState = field(default_factory=EmulatorState)
    faults: FaultInjector = field(default_factory=FaultInjector)
    calls: list[ApiCall] = field(default_factory=list)
    closing: bool = False

    def __post_init__(self) -> None:
        self.flood = FloodControl(self.clock)
        self.webhook = WebhookDeliverer(
            self.updates, self.clock, self.execute, self.config.webhook_retry_delays
        )

    @property
    def bot_id(self) -> int:
        return int(self.config.bot_user["id"])

    async def execute(
        self, method: str, params: Params, source: str = "http"
    ) -> tuple[int, JsonDict]:
        """Run a method; return (HTTP status, response body)."""
        started = self.clock.monotonic()
        entry = lookup(method)
        name = entry[0] if entry else method
        try:
            if entry is None:
                raise method_not_found()
            fault = self.faults.take(name)
            if fault is not None:
                raise fault
            result = await entry[1](self, params)
        except ApiError as error:
            self._record(name, params, started, source, error=error)
            return error.error_code, error.payload()
        except Exception as exc:  # a bug in the emulator must not look like a network error
            logger.exception("emulator failed in %s", name)
            crash = ApiError(500, f"Internal Server Error: {type(exc).__name__}: {exc}")
            self._record(name, params, started, source, error=crash)
            return 500, crash.payload()
        body: JsonDict = {"ok": True}
        if isinstance(result, Described):
            body["result"], body["description"] = result.result, result.description
        else:
            body["result"] = result
        self._record(name, params, started, source, result=body["result"])
        return 200, body

    def reject(self, method: str, params: Params, error: ApiError) -> JsonDict:
        """Record a call refused before dispatch (wrong token) and return its answer."""
        self._record(method, params, self.clock.monotonic(), "http", error=error)
        return error.payload()

    def _record(
        self,
        method: str,
        params: Params,
        started: float,
        source: str,
        result: Any = None,
        error: ApiError | None = None,
    ) -> None:
        error_json = None
        if error is not None:
            error_json = {"error_code": error.error_code, "description": error.description}
            if error.retry_after is not None:
                error_json["retry_after"] = error.retry_after
        self.calls.append(
            ApiCall(
                len(self.calls),
                method,
                copy.deepcopy(params.recorded()),
                copy.deepcopy(result),
                error_json,
                started,
                source,
            )
        )

    # --- helpers shared by method handlers -------------------------------------------------

    def chat_for_sending(self, chat_ref: int | str) -> ChatState:
        """The target chat of a bot message, refusing chats a real bot could not write to."""
        chat = self.state.chat(chat_ref)
        if chat.chat.is_private:
            if chat.blocked:
                raise forbidden("bot was blocked by the user")
            if not chat.started:
                raise forbidden("bot can't initiate conversation with a user")
        return chat

    def check_flood(self, chat: ChatState) -> None:
        if not self.config.enforce_limits:
            return
        retry_after = self.flood.check(chat.chat.id, chat.chat.is_private)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    def store_bot_message(
        self, chat: ChatState, data: JsonDict, reply_keyboard: JsonDict | None = None
    ) -> StoredMessage:
        message = chat.add(StoredMessage(data, from_bot=True, reply_keyboard=reply_keyboard))
        for draft in self.state.drafts.values():  # a sent message replaces the chat's drafts
            if draft.chat_id == chat.chat.id:
                draft.active = False
        self.state.record_output(chat.chat.id, "sent", message)
        return message
