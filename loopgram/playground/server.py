"""The playground's web server (aiohttp): the page, and a small JSON API that acts as the
page's people through the Bot API emulator and shows what the bot stored.

The page polls ``GET /api/chats/{id}`` (cheap when nothing changed: the answer is
``{"unchanged": true}``) and ``GET /api/panel``. Every refusal is a JSON body
``{"ok": false, "error": <key>, "params": {...}, "description": <English text>}``; the page
shows its own translation of ``error``.

No login: whoever opens the page may act as the admin. So it binds 127.0.0.1 by default,
refuses requests whose Host is not the address it serves (DNS rebinding), and refuses
cross-site form posts (an Origin that is not its own).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from loopgram.db import Database
from loopgram.emulator import BotApiEmulator, EmulatedChat, EmulatedUser
from loopgram.emulator.files import image_size
from loopgram.errors import LoopgramError
from loopgram.http_site import start_site
from loopgram.i18n import t
from loopgram.models import Role
from loopgram.playground import panel
from loopgram.playground.cast import Cast
from loopgram.review_chart import render_thumbs_up_chart
from loopgram.review_stats import thumbs_up_series

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent
STATIC_FILES = {
    "playground.js": "application/javascript",
    "playground.css": "text/css",
}
TEXT_LIMIT = 4096  # what Telegram accepts in one message, in UTF-16 code units
CAPTION_LIMIT = 1024
FILE_LIMIT = 20 * 1024 * 1024  # the largest file a bot can download through getFile
FILE_NAME_LIMIT = 255
CALLBACK_DATA_LIMIT = 64
_FORM_OVERHEAD = 64 * 1024
_dumps = functools.partial(json.dumps, ensure_ascii=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    """Bad input from the page: answered with a JSON body the page can translate."""

    def __init__(self, status: int, error: str, description: str, **params: Any) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.params = params

    def response(self) -> web.Response:
        body = {
            "ok": False,
            "error": self.error,
            "params": self.params,
            "description": self.description,
        }
        return web.json_response(body, status=self.status, dumps=_dumps)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result}, dumps=_dumps)


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class PlaygroundServer:
    def __init__(
        self,
        emulator: BotApiEmulator,
        db: Database,
        cast: Cast,
        *,
        lang: str = "en",
        file_limit: int = FILE_LIMIT,
    ) -> None:
        self.emulator = emulator
        self.db = db
        self.cast = cast
        self.lang = lang
        self.file_limit = file_limit
        self.users: dict[int, EmulatedUser] = {}
        self.groups: dict[int, EmulatedChat] = {}
        self._actions = 0  # bumps the chat version when a person acts
        self._chart: tuple[str, bytes] | None = None
        self._chart_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._allowed_hosts: set[str] | None = None
        self.url: str | None = None
        for identity in cast.identities:
            self.users[identity.id] = emulator.user(
                identity.id,
                identity.name,
                username=identity.username,
                language_code=identity.language,
            )
        for group in cast.groups:
            self.groups[group.id] = emulator.group(
                group.id,
                group.title,
                bot_is_admin=group.bot_is_admin,
                admin_ids=tuple(cast.ids(Role.admin)),
            )

    # --- lifecycle --------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.file_limit + _FORM_OVERHEAD,
            middlewares=[self._guard],
        )
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/config", self.config)
        app.router.add_get("/api/chats/{chat_id}", self.chat)
        app.router.add_post("/api/send", self.send)
        app.router.add_post("/api/press", self.press)
        app.router.add_get("/api/files/{file_id}", self.file)
        app.router.add_get("/api/panel", self.panel)
        app.router.add_get("/api/stats.png", self.stats_chart)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); returns the page's URL."""
        try:
            runner, bound_host, bound_port = await start_site(
                self.build_app(), host, port, access_log=None
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise LoopgramError(
                t(self.lang, "playground-cannot-listen", host=host, port=str(port), error=reason),
                key="playground-cannot-listen",
            ) from exc
        self._runner = runner
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{bound_port}/"
        if is_loopback(host):
            self._allowed_hosts = {
                f"{name}:{bound_port}" for name in ("127.0.0.1", "localhost", "[::1]")
            }
        log.info("playground.listening host=%s port=%s", bound_host, bound_port)
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._allowed_hosts is not None and request.host not in self._allowed_hosts:
            return Refusal(
                403, "bad-host", f"this playground answers only at {self.url}"
            ).response()
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            return Refusal(403, "bad-origin", "cross-site requests are refused").response()
        try:
            return await handler(request)
        except Refusal as refusal:
            return refusal.response()
        except web.HTTPRequestEntityTooLarge:
            return Refusal(
                413, "file-too-large", "the file is too large", limit=self.file_limit
            ).response()
        except web.HTTPException:
            raise
        except Exception:  # the page shows a readable error; the log has the trace
            log.exception("playground.failed path=%s", request.path)
            return Refusal(500, "internal", "the playground failed; see its log").response()

    # --- the page ---------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        html = await asyncio.to_thread((STATIC_DIR / "playground.html").read_text, "utf-8")
        return web.Response(
            text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        body = await asyncio.to_thread((STATIC_DIR / name).read_bytes)
        return web.Response(
            body=body, content_type=STATIC_FILES[name], headers={"Cache-Control": "no-store"}
        )

    async def config(self, request: web.Request) -> web.Response:
        bot = self.emulator.bot_user
        return _ok(
            {
                "lang": self.lang,
                "bot": {"id": bot["id"], "name": bot["first_name"], "username": bot["username"]},
                "identities": [i.to_json() for i in self.cast.identities],
                "groups": [g.to_json() for g in self.cast.groups],
                "limits": {
                    "text": TEXT_LIMIT,
                    "caption": CAPTION_LIMIT,
                    "file_bytes": self.file_limit,
                },
            }
        )

    # --- reading a chat ---------------------------------------------------------------------

    def _version(self) -> str:
        return f"{len(self.emulator.calls)}.{self._actions}"

    async def chat(self, request: web.Request) -> web.Response:
        user = self._user(request.query.get("as"))
        chat_id = self._chat_id(request.match_info["chat_id"], user)
        version = self._version()
        answers_since = _int(request.query.get("answers", "0"), "answers")
        answers = self.emulator.callback_answers
        mine = [
            {k: a[k] for k in ("callback_query_id", "text", "show_alert", "url")}
            for a in answers[answers_since:]
            if a["user_id"] == user.id
        ]
        if request.query.get("version") == version and not mine:
            return _ok({"unchanged": True, "version": version, "answers_next": len(answers)})
        messages = [_slim(m) for m in self.emulator.chat_messages(chat_id)]
        drafts = [
            {k: d[k] for k in ("draft_id", "text", "entities")}
            for d in self.emulator.drafts(chat_id)
            if d["active"]
        ]
        return _ok(
            {
                "version": version,
                "messages": messages,
                "drafts": drafts,
                "answers": mine,
                "answers_next": len(answers),
            }
        )

    async def file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        try:
            data = self.emulator.file_bytes(file_id)
        except KeyError:
            raise Refusal(404, "unknown-file", "no such file") from None
        kind = _content_type(data)
        return web.Response(
            body=data, content_type=kind, headers={"X-Content-Type-Options": "nosniff"}
        )

    # --- acting -----------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        if request.content_type == "multipart/form-data":
            return await self._send_file(request)
        body = await _json_body(request)
        user = self._user(body.get("as"))
        chat_id = self._chat_id(body.get("chat"), user)
        text = body.get("text")
        if not isinstance(text, str):
            raise Refusal(400, "bad-request", "text must be a string")
        text = _clean(text)
        if not text.strip():
            raise Refusal(400, "empty-message", "the message is empty")
        length = _u16(text)
        if length > TEXT_LIMIT:
            raise Refusal(
                400,
                "message-too-long",
                f"the message is {length} characters long; Telegram allows {TEXT_LIMIT}",
                length=length,
                limit=TEXT_LIMIT,
            )
        reply_to = self._reply_to(body.get("reply_to"), chat_id)
        message = await user.send_text(text, chat=self.groups.get(chat_id), reply_to=reply_to)
        self._actions += 1
        log.info("playground.send user_id=%s chat_id=%s chars=%s", user.id, chat_id, length)
        return _ok({"message_id": message["message_id"]})

    async def _send_file(self, request: web.Request) -> web.Response:
        fields: dict[str, str] = {}
        upload: tuple[str, str | None, bytes] | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                raise Refusal(400, "bad-request", "a flat form is expected")
            if part.name == "file":
                data = await part.read(decode=False)
                upload = (part.filename or "file", part.headers.get("Content-Type"), bytes(data))
            else:
                try:
                    fields[part.name] = (await part.text())[: CAPTION_LIMIT * 4]
                except (UnicodeDecodeError, LookupError):  # bytes, or a charset Python lacks
                    raise Refusal(400, "bad-request", f"{part.name} is not UTF-8 text") from None
        user = self._user(fields.get("as"))
        chat_id = self._chat_id(fields.get("chat"), user)
        if upload is None:
            raise Refusal(400, "no-file", "no file in the form")
        name, mime, data = upload
        if not data:
            raise Refusal(400, "empty-file", "the file is empty", name=name)
        if len(data) > self.file_limit:
            raise Refusal(413, "file-too-large", "the file is too large", limit=self.file_limit)
        name = _file_name(name)
        caption = _clean(fields.get("caption", "")).strip() or None
        if caption is not None and _u16(caption) > CAPTION_LIMIT:
            raise Refusal(
                400,
                "caption-too-long",
                f"the caption is longer than {CAPTION_LIMIT} characters",
                length=_u16(caption),
                limit=CAPTION_LIMIT,
            )
        chat = self.groups.get(chat_id)
        if image_size(data) is not None and fields.get("as_document") != "1":
            message = await user.send_photo(data, caption=caption, chat=chat)
        else:
            if mime in (None, "", "application/octet-stream"):
                mime = mimetypes.guess_type(name)[0]
            message = await user.send_document(data, name, mime, caption=caption, chat=chat)
        self._actions += 1
        log.info("playground.file user_id=%s chat_id=%s bytes=%s", user.id, chat_id, len(data))
        return _ok({"message_id": message["message_id"]})

    async def press(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        user = self._user(body.get("as"))
        chat_id = self._chat_id(body.get("chat"), user)
        message_id = _int(body.get("message_id"), "message_id")
        data = body.get("data")
        if not isinstance(data, str) or not data:
            raise Refusal(400, "bad-request", "data must be a non-empty string")
        message = next(
            (
                m
                for m in self.emulator.chat_messages(chat_id)
                if m["message_id"] == message_id and m.get("from", {}).get("is_bot")
            ),
            None,
        )
        if message is None:
            raise Refusal(404, "unknown-message", "no such bot message in this chat")
        buttons = [
            button.get("callback_data")
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
            for button in row
        ]
        if data not in buttons or len(data.encode()) > CALLBACK_DATA_LIMIT:
            log.warning(
                "playground.forged_button user_id=%s chat_id=%s message_id=%s data=%r",
                user.id,
                chat_id,
                message_id,
                data[:80],
            )
            raise Refusal(
                400, "forged-button", "this message has no button with that data (any more)"
            )
        query_id = await user.press(message_id, data, chat=self.groups.get(chat_id))
        self._actions += 1
        return _ok({"callback_query_id": query_id})

    # --- what the bot stored ----------------------------------------------------------------

    async def panel(self, request: web.Request) -> web.Response:
        result = await self.db.run(panel.snapshot, names=self.cast.names)
        return _ok(result)

    async def stats_chart(self, request: web.Request) -> web.Response:
        """The chart /stats sends admins, drawn again only when a rating changed."""
        async with self._chart_lock:
            version = await self.db.run(panel.chart_version)
            if self._chart is None or self._chart[0] != version:
                series = await self.db.run(thumbs_up_series)
                png = await asyncio.to_thread(
                    render_thumbs_up_chart, series, title=t(self.lang, "stats-chart-plot-title")
                )
                self._chart = (version, png)
            png = self._chart[1]
        return web.Response(body=png, content_type="image/png")

    # --- checks -----------------------------------------------------------------------------

    def _user(self, raw: object) -> EmulatedUser:
        user_id = _int(raw, "as")
        user = self.users.get(user_id)
        if user is None:
            raise Refusal(400, "unknown-user", f"there is no person {user_id} here", id=user_id)
        return user

    def _chat_id(self, raw: object, user: EmulatedUser) -> int:
        chat_id = _int(raw, "chat")
        if chat_id in self.groups:
            return chat_id
        if chat_id == user.id:
            return chat_id
        if chat_id in self.users:
            raise Refusal(403, "not-your-chat", "that is another person's private chat")
        raise Refusal(404, "unknown-chat", f"there is no chat {chat_id} here", id=chat_id)

    def _reply_to(self, raw: object, chat_id: int) -> int | None:
        if raw is None:
            return None
        message_id = _int(raw, "reply_to")
        if not any(m["message_id"] == message_id for m in self.emulator.chat_messages(chat_id)):
            raise Refusal(404, "unknown-message", "no such message in this chat")
        return message_id


def _int(raw: object, name: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and len(raw) < 20:
        text = raw.strip()
        digits = text.removeprefix("-")
        # ASCII digits only: isdigit() alone passes "²", and lstrip("-") passes "--1".
        if digits.isascii() and digits.isdigit():
            return int(text)
    raise Refusal(400, "bad-request", f"{name} must be a number", field=name)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Refusal(415, "bad-request", "send JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise Refusal(400, "bad-request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "bad-request", "a JSON object is expected")
    return body


def _clean(text: str) -> str:
    """Telegram drops what cannot be encoded; lone surrogates and NULs are refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal(400, "bad-text", "the text is not valid Unicode") from None
    if "\x00" in text:
        raise Refusal(400, "bad-text", "the text contains NUL characters")
    return text.replace("\r\n", "\n")


def _file_name(name: str) -> str:
    name = Path(name.replace("\\", "/")).name.strip() or "file"
    name = "".join(ch for ch in name if ch.isprintable())
    if len(name) > FILE_NAME_LIMIT:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: FILE_NAME_LIMIT - len(ext) - 1] + dot + ext) if dot else name[:255]
    return name or "file"


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _slim(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the page draws it: its edit history becomes a count."""
    versions = [*message.pop("edits", []), message]
    # Telegram marks a message "edited" when its text changed, not its buttons.
    message["edit_count"] = sum(
        (a.get("text"), a.get("caption")) != (b.get("text"), b.get("caption"))
        for a, b in itertools.pairwise(versions)
    )
    reply = message.get("reply_to_message")
    if isinstance(reply, dict):
        message["reply_to_message"] = {
            k: reply[k] for k in ("message_id", "from", "text", "caption") if k in reply
        }
    return message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
