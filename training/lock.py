"""One training run per assistant at a time, across processes and machines.

With Redis: `SET NX EX` with a random token, released only by its owner (so a run that
outlived its TTL cannot release a newer run's lock). The TTL is short and a thread of the
holder renews it while the run lives, so a run killed mid-way (SIGKILL, a lost node) frees
the lock within `DEFAULT_TTL_SECONDS` instead of blocking training for hours. Without Redis
(the embedded default, one machine): an flock on a file, which the kernel releases if the
process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Seconds a Redis lock outlives its holder; the holder renews it every third of that.
DEFAULT_TTL_SECONDS = 60

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""


@contextlib.contextmanager
def training_lock(
    assistant: str, *, redis_url: str | None, data_dir: Path, ttl_seconds: int | None = None
) -> Iterator[bool]:
    """Yields True when this process holds the lock, False when another run holds it."""
    if redis_url:
        ttl = ttl_seconds or DEFAULT_TTL_SECONDS
        with _redis_lock(f"loopgram:training-lock:{assistant}", redis_url, ttl) as held:
            yield held
    else:
        with _file_lock(data_dir / "locks" / f"training-{assistant}.lock") as held:
            yield held


@contextlib.contextmanager
def _redis_lock(key: str, url: str, ttl: int) -> Iterator[bool]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    token = secrets.token_hex(16)
    held = bool(client.set(key, token, nx=True, ex=ttl))
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(client, key, token, ttl, stop), name="training-lock", daemon=True
    )
    if held:
        renewer.start()
    try:
        yield held
    finally:
        stop.set()
        if held:
            renewer.join()
            client.eval(_RELEASE, 1, key, token)
        client.close()


def _renew(client: Any, key: str, token: str, ttl: int, stop: threading.Event) -> None:
    """Keep the lock while the run lives; a failed renewal is retried at the next tick."""
    while not stop.wait(ttl / 3):
        try:
            client.eval(_RENEW, 1, key, token, ttl)
        except Exception as exc:  # Redis briefly away: the lock lives on until its TTL
            log.warning("training.lock_renew_failed key=%s error=%s", key, exc)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
