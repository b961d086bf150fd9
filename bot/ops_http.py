"""Operations endpoints: `/healthz` (alive), `/readyz` (database, Redis, model server answer)
and `/metrics` (Prometheus), on the webhook app and on `METRICS_PORT`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from loopgram import metrics
from loopgram.http_site import start_site
from loopgram.readiness import ReadinessChecker

log = logging.getLogger(__name__)

READINESS_KEY: web.AppKey[ReadinessChecker] = web.AppKey("loopgram_readiness")


def add_ops_routes(
    app: web.Application, readiness: ReadinessChecker | None, *, healthz: bool = True
) -> None:
    """`/metrics` always; `/readyz` when a checker is given; `/healthz` unless the app has it."""
    if healthz:
        app.router.add_get("/healthz", healthz_view)
    app.router.add_get("/metrics", metrics_view)
    if readiness is not None:
        app[READINESS_KEY] = readiness
        app.router.add_get("/readyz", readyz_view)


async def healthz_view(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz_view(request: web.Request) -> web.Response:
    report = await request.app[READINESS_KEY].check()
    return web.json_response(report.body(), status=200 if report.ok else 503)


async def metrics_view(_request: web.Request) -> web.Response:
    body = await asyncio.to_thread(metrics.render)  # database figures may be read
    response = web.Response(body=body)
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


async def start_ops_server(
    host: str, port: int, readiness: ReadinessChecker | None
) -> tuple[web.AppRunner, int]:
    """Serve the operations endpoints on `host:port` (0 = any free port); returns the runner
    and the bound port."""
    app = web.Application()
    add_ops_routes(app, readiness)
    runner, _, bound = await start_site(app, host, port)
    log.info("ops.listening host=%s port=%s", host, bound)
    return runner, bound
