"""Start an aiohttp application on a TCP port: the one way every server here binds (the Bot
API emulator, the model server, the playground, the webhook and the operations endpoints)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def start_site(
    app: web.Application, host: str, port: int, **runner_options: Any
) -> tuple[web.AppRunner, str, int]:
    """Serve `app` on host:port (port 0 = any free one). Returns the runner (`cleanup()`
    stops it), the bound host and port. If binding fails the runner is cleaned up and the
    error (usually OSError: address in use) propagates."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, str(bound_host), int(bound_port)
