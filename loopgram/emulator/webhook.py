"""Webhook delivery: POST each update, in order, to the bot's URL.

Non-2xx answers and connection errors are retried with growing delays (a bounded number of
times, then the update is given up, as a real outage would lose it). A method call in the
webhook's answer (aiogram does this) is executed like a normal request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .clock import Clock
from .params import Params, Upload
from .updates import UpdateQueue

JsonDict = dict[str, Any]
logger = logging.getLogger(__name__)
Executor = Callable[[str, Params, str], Awaitable[tuple[int, JsonDict]]]
_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class WebhookSettings:
    url: str
    secret_token: str | None
    max_connections: int


class WebhookDeliverer:
    def __init__(
        self, queue: UpdateQueue, clock: Clock, execute: Executor, retry_delays: Sequence[float]
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._execute = execute
        self._retry_delays = tuple(retry_delays)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.settings: WebhookSettings | None = None
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.delivered: list[JsonDict] = []
        self.given_up: list[JsonDict] = []

    @property
    def active(self) -> bool:
        return self.settings is not None

    def configure(self, settings: WebhookSettings | None) -> None:
        """Set (or with None, remove) the webhook; an update in flight is delivered again."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.settings = settings
        if settings is not None:
            self._task = asyncio.create_task(self._run(settings))
        self._queue.notify()  # long polls waiting now must answer 409

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, settings: WebhookSettings) -> None:
        while True:
            batch = self._queue.peek(1)
            if not batch:
                await self._queue.wait(1.0)
                continue
            update = batch[0]
            if await self._deliver(settings, update):
                self.delivered.append(update)
            else:
                logger.warning(
                    "webhook gave up update %s: %s", update["update_id"], self.last_error_message
                )
                self.given_up.append(update)
            self._queue.remove(int(update["update_id"]))

    async def _deliver(self, settings: WebhookSettings, update: JsonDict) -> bool:
        headers = {"Content-Type": "application/json"}
        if settings.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = settings.secret_token
        body = json.dumps(update, ensure_ascii=False).encode()
        for delay in (*self._retry_delays, None):
            error = await self._post(settings.url, body, headers)
            if error is None:
                return True
            self.last_error_date = self._clock.unix()
            self.last_error_message = error
            if delay is None:
                return False
            await asyncio.sleep(delay)
        return False

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """POST once; return the error text getWebhookInfo would show, or None on success."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
                try:
                    await self._run_answer(response)
                except Exception:  # a malformed answer is the bot's problem, not a delivery error
                    logger.exception("could not run the method in the webhook answer")
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return "Connection refused"
        except aiohttp.ClientError as error:
            return f"{type(error).__name__}: {error}"
        return None

    async def _run_answer(self, response: aiohttp.ClientResponse) -> None:
        """Execute a method the webhook returned in its answer, if any."""
        raw: JsonDict = {}
        uploads: dict[str, Upload] = {}
        if response.content_type == "multipart/form-data":
            reader = aiohttp.MultipartReader.from_response(response)
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.filename:
                    uploads[part.name] = Upload(
                        part.filename,
                        part.headers.get("Content-Type", "application/octet-stream"),
                        await part.read(),
                    )
                else:
                    raw[part.name] = await part.text()
        elif response.content_type == "application/json":
            with contextlib.suppress(ValueError):
                decoded = json.loads(await response.text())
                if isinstance(decoded, dict):
                    raw = decoded
        method = raw.pop("method", None)
        if isinstance(method, str) and method:
            await self._execute(method, Params(raw, uploads), "webhook_response")
