"""Rating ingestion end to end: the bot's FeedbackSink, Celery on Redis, a real worker, Postgres.

``measure_ingest`` creates a fresh PostgreSQL database (``loopgram_bench_<random>``, dropped
afterwards) and uses one Redis database number (flushed before and after).  It stores ``n``
answered interactions, then:

* baseline — the same ``n`` rating rows as plain batched INSERTs (SQLAlchemy executemany,
  one transaction per batch) into the ``rating`` table, timed, then deleted again;
* measured — ``loopgram worker -Q feedback`` as a subprocess, ready and warmed up (2,000
  untimed ratings on other answers through the same path, then deleted) before the clock
  starts, with this process's heap frozen as the bot freezes its own once started; the
  clock runs from the first of ``n`` presses handed to the bot's real ``FeedbackSink``
  (all at once, as a burst of concurrent callback handlers would) until all ``n`` ratings
  are in the table.  The sink publishes them as ``loopgram.record_feedback_many`` messages
  (one per batch of presses), the worker stores them in transactions of many.  Every press
  must come back "queued" (the normal path, never the write-through).  Lost = ``n`` - rows; a
  rating stored twice is impossible (one row per (interaction, user)), and the count is
  re-read after a pause to be sure no late duplicate or straggler changes it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, insert, text
from sqlalchemy.engine import make_url
from sqlmodel import select

from loopgram import migrate
from loopgram.db import Database, normalise_url
from loopgram.feedback import Feedback
from loopgram.models import Interaction, Rating, utcnow
from loopgram.settings import DatabaseSettings, RedisSettings, Settings
from loopgram.spool import Spool

if TYPE_CHECKING:
    from bot.feedback_sink import FeedbackSink

__all__ = ["IngestResult", "measure_ingest", "services_problem"]

log = logging.getLogger(__name__)

FIRST_USER = 700_000_000
BATCH = 500
WARM_UP = 2_000  # ratings sent (untimed, on their own answers) before the clock starts


@dataclass(frozen=True)
class IngestResult:
    ratings: int
    stored: int
    seconds: float
    plain_seconds: float
    workers: int
    messages: int = 0  # broker messages the sink published for the ``ratings``
    not_queued: int = 0  # presses the sink wrote through or spooled (0 on a healthy run)

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

    from bot.feedback_sink import FeedbackSink
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
        everything = _feedback(_add_interactions(db, n + WARM_UP))
        feedback, warm_up = everything[:n], everything[n:]
        plain_seconds = _plain_insert(db, feedback)

        app = create_celery(Settings(redis=RedisSettings(redis_url=redis_url)))
        with tempfile.TemporaryDirectory(prefix="loopgram-bench-ingest-") as tmp:
            process, log_path = _start_worker(
                bench_url, redis_url, workers, Path(tmp), list(worker_args)
            )
            _wait_ready(app, process, log_path)
            limit = timeout if timeout is not None else max(60.0, n / 50)
            sink = FeedbackSink(celery_app=app, db=db, spool=Spool(Path(tmp) / "spool.jsonl"))
            _warm_up(sink, db, warm_up, process, limit)
            # As the bot does once started (bot/runner.py): the heap built so far is frozen,
            # so a burst of presses does not pay a full collection over the whole process.
            gc.collect()
            gc.freeze()
            try:
                started = time.perf_counter()
                outcomes = asyncio.run(_submit_all(sink, feedback))
                stored = _wait_stored(db, n, process, started, limit)
                seconds = time.perf_counter() - started
            finally:
                gc.unfreeze()
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
    not_queued = n - outcomes["queued"]
    if not_queued:
        log.error("bench.ingest %d presses were not queued: %s", not_queued, dict(outcomes))
    return IngestResult(
        n, stored, seconds, plain_seconds, workers, messages=sink.published, not_queued=not_queued
    )


def _wait_stored(
    db: Database, n: int, process: subprocess.Popen[bytes], started: float, limit: float
) -> int:
    """Poll the row count until ``n`` ratings are stored, the worker died or time is up."""
    stored = 0
    while time.perf_counter() - started < limit:
        stored = _count(db)
        if stored >= n or process.poll() is not None:
            break
        time.sleep(0.01)
    return stored


def _warm_up(
    sink: FeedbackSink,
    db: Database,
    feedback: list[Feedback],
    process: subprocess.Popen[bytes],
    limit: float,
) -> None:
    """Untimed: a few batches through the whole path, so the worker's pool processes have
    their database connections and compiled statements, as a worker that has been running
    has; then their rows are deleted again."""
    asyncio.run(_submit_all(sink, feedback))
    if _wait_stored(db, len(feedback), process, time.perf_counter(), limit) < len(feedback):
        raise RuntimeError("the ingestion warm-up did not store its ratings")
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM review_item"))
        conn.execute(text("DELETE FROM rating"))
    sink.published = 0


async def _submit_all(sink: FeedbackSink, feedback: list[Feedback]) -> Counter[str]:
    """Every press handed to the sink at once; returns how many were queued/written/spooled."""
    outcomes = await asyncio.gather(*(sink.submit(f) for f in feedback))
    await sink.stop()
    return Counter(outcomes)
