"""Rating ingestion end to end: Celery tasks on Redis, a real worker process, Postgres.

``measure_ingest`` creates a fresh PostgreSQL database (``loopgram_bench_<random>``, dropped
afterwards) and uses one Redis database number (flushed before and after).  It stores ``n``
answered interactions, then:

* baseline — the same ``n`` rating rows as plain batched INSERTs (SQLAlchemy executemany,
  one transaction per batch) into the ``rating`` table, timed, then deleted again;
* measured — ``loopgram worker -Q feedback`` as a subprocess, ready before the clock starts;
  the clock runs from the first ``loopgram.record_feedback`` enqueued (as ``FeedbackSink``
  sends it) until all ``n`` ratings are in the table.  Lost = ``n`` - rows; a rating stored
  twice is impossible (one row per (interaction, user)), and the count is re-read after a
  pause to be sure no late duplicate or straggler changes it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, insert, text
from sqlalchemy.engine import make_url
from sqlmodel import select

from loopgram import migrate
from loopgram.db import Database, normalise_url
from loopgram.feedback import Feedback
from loopgram.models import Interaction, Rating, utcnow
from loopgram.settings import DatabaseSettings, RedisSettings, Settings

__all__ = ["IngestResult", "measure_ingest", "services_problem"]

log = logging.getLogger(__name__)

TASK_NAME = "loopgram.record_feedback"
FIRST_USER = 700_000_000
BATCH = 500


@dataclass(frozen=True)
class IngestResult:
    ratings: int
    stored: int
    seconds: float
    plain_seconds: float
    workers: int

    @property
    def lost(self) -> int:
        return self.ratings - self.stored

    @property
    def rate(self) -> float:
        return self.stored / self.seconds

    @property
    def plain_rate(self) -> float:
        return self.ratings / self.plain_seconds


def bench_redis_url(url: str, db_number: int) -> str:
    """``url`` with its database number replaced: the bench owns (and flushes) that one."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db_number}", parts.query, ""))


def services_problem(database_url: str | None, redis_url: str | None) -> str | None:
    """None when PostgreSQL and Redis both answer, else why the ingestion bench must skip."""
    import psycopg

    if not database_url or make_url(database_url).get_backend_name() != "postgresql":
        return f"ingestion needs PostgreSQL, got {database_url or 'no database URL'}"
    if not redis_url:
        return "ingestion needs Redis, got no Redis URL"
    try:
        with psycopg.connect(_psycopg_url(database_url), connect_timeout=3):
            pass
    except Exception as exc:
        return f"PostgreSQL is unreachable ({type(exc).__name__}: {_one_line(exc)})"
    return redis_reachable(redis_url)


def redis_reachable(url: str | None) -> str | None:
    """None when Redis at ``url`` answers PING, else why not (one line)."""
    if not url:
        return "no Redis URL"
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"Redis at {url} is unreachable ({type(exc).__name__}: {_one_line(exc)})"
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


def _add_interactions(db: Database, n: int) -> list[tuple[int, int]]:
    """``n`` answered questions, each from its own user: (interaction id, user id)."""
    with db.session() as session:
        session.add_all(
            Interaction(
                chat_id=FIRST_USER + i,
                user_id=FIRST_USER + i,
                assistant="chat",
                prompt=f"question {i}",
                answer=f"answer {i}",
            )
            for i in range(n)
        )
    with db.session() as session:
        rows = session.exec(select(Interaction.id, Interaction.user_id)).all()
    return sorted((int(i or 0), u) for i, u in rows)


def _feedback(rows: list[tuple[int, int]]) -> list[Feedback]:
    # One in five is a 👎, as in real use: those also flag the answer for review.
    return [
        Feedback(interaction_id=iid, user_id=uid, value=-1 if k % 5 == 4 else 1, update_id=k)
        for k, (iid, uid) in enumerate(rows)
    ]


def _count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Rating)).scalar_one())


def _plain_insert(db: Database, feedback: list[Feedback]) -> float:
    """The baseline: the same rows as plain batched INSERTs; returns seconds."""
    now = utcnow()
    rows = [
        {
            "interaction_id": f.interaction_id,
            "user_id": f.user_id,
            "value": f.value,
            "source": f.source,
            "created_at": now,
            "updated_at": now,
        }
        for f in feedback
    ]
    statement = insert(Rating)
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        with db.engine.begin() as conn:
            conn.execute(statement, rows[start : start + BATCH])
    seconds = time.perf_counter() - started
    if _count(db) != len(rows):
        raise RuntimeError("the plain INSERT baseline did not store every row")
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM rating"))
    return seconds


def _start_worker(
    database_url: str, redis_url: str, workers: int, folder: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = folder / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(folder / "data"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loopgram.cli",
            "worker",
            "-Q",
            "feedback",
            "-c",
            str(workers),
            "-n",
            f"bench-{uuid.uuid4().hex[:8]}@%h",
            *extra,
        ],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(app: Any, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the worker exited with {process.returncode}: {tail}")
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("the worker did not answer a ping within 60 s")


def measure_ingest(
    n: int,
    *,
    database_url: str,
    redis_url: str,
    workers: int = 2,
    timeout: float | None = None,
    worker_args: tuple[str, ...] = (),
) -> IngestResult:
    """Enqueue ``n`` ratings and time the worker storing them (see the module docstring).

    ``database_url`` is any database on the PostgreSQL server (used to create and drop the
    bench's own); ``redis_url`` must name a Redis database the bench may flush.
    """
    import psycopg

    from workers.celery_app import create_celery

    admin = _psycopg_url(database_url)
    name = f"loopgram_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(normalise_url(database_url)).set(database=name)
    bench_url = url.render_as_string(hide_password=False)
    db: Database | None = None
    process: subprocess.Popen[bytes] | None = None
    _flush(redis_url)
    try:
        settings = DatabaseSettings(database_url=bench_url)
        migrate.upgrade(settings)
        db = Database.from_settings(settings)
        feedback = _feedback(_add_interactions(db, n))
        plain_seconds = _plain_insert(db, feedback)

        app = create_celery(Settings(redis=RedisSettings(redis_url=redis_url)))
        with tempfile.TemporaryDirectory(prefix="loopgram-bench-ingest-") as tmp:
            process, log_path = _start_worker(
                bench_url, redis_url, workers, Path(tmp), list(worker_args)
            )
            _wait_ready(app, process, log_path)
            limit = timeout if timeout is not None else max(60.0, n / 50)
            started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for f in feedback:
                    app.send_task(
                        TASK_NAME, args=[f.to_payload()], queue="feedback", producer=producer
                    )
            stored = 0
            while time.perf_counter() - started < limit:
                stored = _count(db)
                if stored >= n:
                    break
                if process.poll() is not None:
                    break
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            time.sleep(0.5)  # anything late (a redelivery, a straggler) shows up now
            stored = _count(db)
            _stop(process)
            if stored != n:
                tail = log_path.read_text(errors="replace")[-3000:]
                log.error("bench.ingest stored %d of %d; worker log tail:\n%s", stored, n, tail)
        app.close()
    finally:
        if process is not None:
            _stop(process)
        if db is not None:
            db.dispose()
        _flush(redis_url)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return IngestResult(n, stored, seconds, plain_seconds, workers)
