"""The aiohttp application: Bot API routes like api.telegram.org, file downloads, and a small
control API (``/_emulator/...``) for tools that are not Python."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from .core import EmulatorCore
from .errors import ApiError, unauthorized
from .incoming import ingest_raw_update
from .params import Params
from .request import read_params

MAX_UPLOAD = 50 * 1024 * 1024 + 1024 * 1024  # the server's 50 MB limit plus form overhead
_dumps = functools.partial(json.dumps, ensure_ascii=False)
_NOT_FOUND: dict[str, Any] = {"ok": False, "error_code": 404, "description": "Not Found"}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


class ApiServer:
    def __init__(self, core: EmulatorCore) -> None:
        self._core = core

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD)
        app.router.add_route("*", "/bot{token}/{method}", self.method)
        app.router.add_get("/file/bot{token}/{path:.+}", self.download)
        app.router.add_post("/_emulator/updates", self.push_update)
        app.router.add_get("/_emulator/chats/{chat_id}/messages", self.chat_messages)
        app.router.add_get("/_emulator/chats/{chat_id}/drafts", self.chat_drafts)
        app.router.add_get("/_emulator/calls", self.calls)
        return app

    async def method(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        try:
            params = await read_params(request)
        except ApiError as error:
            return _json(error.payload(), error.error_code)
        if request.match_info["token"] != self._core.config.token:
            return _json(self._core.reject(name, params, unauthorized()), 401)
        status, body = await self._core.execute(name, params)
        return _json(body, status)

    async def download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self._core.config.token:
            return _json(unauthorized().payload(), 401)
        stored = self._core.state.files.by_path(request.match_info["path"])
        if stored is None:
            return _json(_NOT_FOUND, 404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def push_update(self, request: web.Request) -> web.Response:
        try:
            update = await request.json()
        except ValueError:
            update = None
        if not isinstance(update, dict):
            return _json(
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: an Update JSON object is expected",
                },
                400,
            )
        return _json({"ok": True, "result": {"update_id": ingest_raw_update(self._core, update)}})

    def _chat_id(self, request: web.Request) -> int | None:
        try:
            chat_id = int(request.match_info["chat_id"])
        except ValueError:
            return None
        return chat_id if chat_id in self._core.state.chats else None

    async def chat_messages(self, request: web.Request) -> web.Response:
        chat_id = self._chat_id(request)
        if chat_id is None:
            return _json(_NOT_FOUND, 404)
        return _json({"ok": True, "result": self._core.state.chats[chat_id].snapshots()})

    async def chat_drafts(self, request: web.Request) -> web.Response:
        chat_id = self._chat_id(request)
        if chat_id is None:
            return _json(_NOT_FOUND, 404)
        drafts = [d.to_dict() for d in self._core.state.drafts.values() if d.chat_id == chat_id]
        return _json({"ok": True, "result": drafts})

    async def calls(self, request: web.Request) -> web.Response:
        since = Params(dict(request.query)).integer("since") or 0
        calls = self._core.calls[max(since, 0) :]
        return _json(
            {"ok": True, "result": [c.to_json() for c in calls], "next": len(self._core.calls)}
        )
