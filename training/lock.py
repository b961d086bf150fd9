"""One training run per assistant at a time, across processes and machines.

With Redis: `SET NX EX` with a random token, released only by its owner (so a run that
outlived its TTL cannot release a newer run's lock). Without Redis (the embedded default,
one machine): an flock on a file, which the kernel releases if the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def training_lock(
    assistant: str, *, redis_url: str | None, data_dir: Path, ttl_seconds: int = 6 * 3600
) -> Iterator[bool]:
    """Yields True when this process holds the lock, False when another run holds it."""
    if redis_url:
        with _redis_lock(f"loopgram:training-lock:{assistant}", redis_url, ttl_seconds) as held:
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
    try:
        yield held
    finally:
        if held:
            client.eval(_RELEASE, 1, key, token)
        client.close()


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
