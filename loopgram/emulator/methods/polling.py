"""Receiving updates: getUpdates (long polling) and the webhook methods."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import bad_request, get_updates_conflict, polling_conflict
from ..webhook import WebhookSettings
from .registry import Described, api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

_MAX_POLL_TIMEOUT = 50  # the server caps long polls too
_SECRET = re.compile(r"^[A-Za-z0-9_\-]{1,256}$")


def _allowed_updates(p: Params) -> list[str] | None:
    value = p.json_value("allowed_updates", "can't parse allowed updates JSON object")
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise bad_request("can't parse allowed updates JSON object")
    return value


@api_method("getUpdates")
async def get_updates(core: EmulatorCore, p: Params) -> list[dict[str, Any]]:
    if core.webhook.active:
        raise get_updates_conflict()
    queue = core.updates
    queue.poll_generation += 1
    generation = queue.poll_generation
    queue.notify()  # an older waiting request is terminated with 409
    offset = p.integer("offset")
    if offset:
        queue.confirm(offset)
    limit = min(max(p.integer("limit") or 100, 1), 100)
    queue.set_allowed(_allowed_updates(p))
    deadline = core.clock.monotonic() + min(max(p.integer("timeout") or 0, 0), _MAX_POLL_TIMEOUT)
    while True:
        if core.closing:
            return []
        if generation != queue.poll_generation:
            raise polling_conflict()
        if core.webhook.active:
            raise get_updates_conflict()
        batch = queue.peek(limit)
        remaining = deadline - core.clock.monotonic()
        if batch or remaining <= 0:
            return [dict(update) for update in batch]
        await queue.wait(remaining)


@api_method("setWebhook")
async def set_webhook(core: EmulatorCore, p: Params) -> Described:
    url = (p.text("url") or "").strip()
    if not url:
        removed: Described = await delete_webhook(core, p)
        return removed
    if not url.lower().startswith(("https://", "http://")):
        # The real server insists on HTTPS; a local emulator has to accept plain HTTP too.
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    secret = p.text("secret_token") or None
    if secret is not None and not _SECRET.match(secret):
        raise bad_request("secret token contains unallowed characters")
    max_connections = p.integer("max_connections") or 40
    if not 1 <= max_connections <= 100:
        raise bad_request("bad webhook: max_connections must be between 1 and 100")
    allowed = _allowed_updates(p)
    if p.flag("drop_pending_updates"):
        core.updates.clear()
    core.updates.set_allowed(allowed)
    settings = WebhookSettings(url, secret, max_connections)
    if core.webhook.settings == settings:
        return Described(True, "Webhook is already set")
    core.webhook.configure(settings)
    return Described(True, "Webhook was set")


@api_method("deleteWebhook")
async def delete_webhook(core: EmulatorCore, p: Params) -> Described:
    if p.flag("drop_pending_updates"):
        core.updates.clear()
    if not core.webhook.active:
        return Described(True, "Webhook is already deleted")
    core.webhook.configure(None)
    return Described(True, "Webhook was deleted")


@api_method("getWebhookInfo")
async def get_webhook_info(core: EmulatorCore, p: Params) -> dict[str, Any]:
    webhook = core.webhook
    info: dict[str, Any] = {
        "url": webhook.settings.url if webhook.settings else "",
        "has_custom_certificate": False,
        "pending_update_count": len(core.updates.pending),
    }
    if webhook.settings is not None:
        info["ip_address"] = "127.0.0.1"
        info["max_connections"] = webhook.settings.max_connections
        if core.updates.allowed is not None:
            info["allowed_updates"] = sorted(core.updates.allowed)
    if webhook.last_error_date is not None:
        info["last_error_date"] = webhook.last_error_date
        info["last_error_message"] = webhook.last_error_message
    return info
