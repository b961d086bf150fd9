"""Fault injection: a TCP proxy to cut or stall a service, a private Redis to kill, workers
to SIGKILL.

The shared Postgres and Redis are never stopped: Postgres is reached through a `TcpProxy`
that a test cuts (connections dropped, new ones refused) or stalls (bytes held, nothing
answered), and Redis is a private `redis-server` on a free port that a test may SIGKILL and
start again on the same port and append-only file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlmodel import func, select

from loopgram.db import Database

# The scripted model server, the bot's settings and the answer check are the end-to-end
# suite's own (imported fixtures are registered here too).
from tests.e2e.conftest import bot_settings, has_rating_buttons, model_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or predicate}")
        time.sleep(0.05)


def count(db: Database, model: Any) -> int:
    return int(
        db.call(lambda *, session: session.exec(select(func.count()).select_from(model)).one())
    )


class TcpProxy:
    """127.0.0.1:<port> → target, in threads (usable from sync and async tests alike).

    `cut()`: every open connection is dropped and the port refuses new ones (a crashed or
    unreachable server). `stall()`: connections stay open but no byte is forwarded (a hung
    server, a network partition without resets). `restore()` undoes either.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self.accepted = 0
        self._listen()

    # --- controls --------------------------------------------------------------------------

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            _close(listener)
        for conn in conns:
            _close(conn)

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()
        with self._lock:
            down = self._listener is None
        if down and not self._closed:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()

    def url_for(self, url: str) -> str:
        """`url` with the target's port replaced by the proxy's."""
        return url.replace(f":{self.target[1]}/", f":{self.port}/", 1)

    # --- plumbing --------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _close(client)
                    _close(upstream)
                    return
                self._conns.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.1):
                    if src not in self._conns:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class PrivateRedis:
    """A redis-server of this test alone, with an fsync'd append-only file, so that it can be
    SIGKILLed and started again on the same port with what it had acknowledged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
            ],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        client = redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: _pings(client), 10, "private redis-server up")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url)


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    """The shared Postgres behind a proxy this test may cut; Postgres itself is untouched."""
    proxy = TcpProxy("127.0.0.1", 5432)
    yield proxy
    proxy.close()


def start_worker(
    env: dict[str, str], log: Path, *args: str, visibility_timeout: float | None = None
) -> subprocess.Popen[bytes]:
    """`loopgram worker` in its own process group (so a SIGKILL reaches its pool too).

    `visibility_timeout`: seconds after which Redis hands an unacknowledged message (of a
    worker that died) to another worker; production's is an hour, a test cannot wait that
    long, so the worker is started through `tests/faults/worker_main.py` with it shortened.
    """
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    if visibility_timeout is not None:
        full["FAULTS_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("worker_main.py")), *args],
        env=full,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(ROOT),
    )


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    kill_group(process, signal.SIGTERM)


# --- the real bot against the Bot API emulator and a scripted model -------------------------

REPLY = "Ответ модели: три главных задачи недели."


@pytest.fixture
def scripted() -> Any:
    from training.model_server.scripted import ScriptedBackend

    return ScriptedBackend(REPLY, token_delay=0.005)


async def ask_all(emu: Any, users: list[Any], text: str = "вопрос") -> list[dict[str, Any]]:
    """Each user asks; returns each one's answer (the message with the rating buttons)."""
    for user in users:
        await user.send_text(f"{text} {user.id}")
    return [
        await emu.wait_for_bot_message(user.id, has_rating_buttons, timeout=30) for user in users
    ]
