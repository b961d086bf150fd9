"""The one place that owns database engines.

Sessions are opened per unit of work: per bot call through `Database.run`, per Celery task,
per CLI command. Nothing keeps a global session.

SQLite files have one writer at a time and, in WAL mode with the default
`synchronous=FULL`, one fsync per commit: the bot's per-update writes, each committed on its
own from a pool of threads, queue behind one another's fsyncs and busy-wait on the write lock.
`Database.run_grouped` runs such short units of work back to back on one writer thread and
commits all the units waiting at that moment together (group commit, see `GroupCommitter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, create_engine

from loopgram.settings import DatabaseSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Ids are 64-bit (SQLite's INTEGER, PostgreSQL's bigint); SQLite refuses to even bind a
#: larger Python int (OverflowError), so ids from people or callback data are checked first.
ID_MIN, ID_MAX = -(2**63), 2**63 - 1


def parse_id(text: str) -> int | None:
    """The id a person typed ("42", "-100123"), or None when no row can have it."""
    text = text.strip()
    # isdecimal, not isdigit: "²" is a digit that int() does not read.
    if not text.removeprefix("-").isdecimal():
        return None
    value = int(text)
    return value if ID_MIN <= value <= ID_MAX else None


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs (psycopg2 is not a dependency)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def make_engine(settings: DatabaseSettings) -> Engine:
    url = normalise_url(settings.database_url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=settings.database_echo,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, echo=settings.database_echo, pool_pre_ping=True, pool_size=10, max_overflow=10
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the bot read while the embedded worker writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _is_sqlite_file(engine: Engine) -> bool:
    url = engine.url
    database = url.database or ""
    return (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")  # URI forms may name shared-memory databases
        and url.query.get("mode") != "memory"
    )


class Database:
    """An engine plus helpers to run a unit of work, sync or from async code."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._grouped = GroupCommitter(engine) if _is_sqlite_file(engine) else None

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        return cls(make_engine(settings))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run a keyword-only CRUD function `fn(session=..., **kwargs)` as one unit of work."""
        with self.session() as session:
            return fn(session=session, **kwargs)

    async def run(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """`call` in a worker thread, so the event loop never blocks on database I/O."""
        return await asyncio.to_thread(self.call, fn, **kwargs)

    async def run_grouped(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """`run` for the short units of work of every update (a few rows, milliseconds).

        On a SQLite file the unit runs on the group-commit writer thread, committed together
        with the units submitted alongside it; it is atomic on its own all the same, and this
        returns only once its commit is on disk. Elsewhere it is `run`. Long work (exports,
        statistics) belongs in `run`: it would hold up every update behind it."""
        if self._grouped is None:
            return await self.run(fn, **kwargs)
        return await self._grouped.submit(fn, kwargs)

    def dispose(self) -> None:
        if self._grouped is not None:
            self._grouped.close()
        self.engine.dispose()


@dataclass
class _Unit:
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    result: Any = None
    error: BaseException | None = None


class GroupCommitter:
    """Runs units of work on one writer thread; the units waiting when a batch starts share
    one SQLite transaction and one commit (one fsync).

    Each unit runs in its own session inside a SAVEPOINT of the batch's transaction: a unit
    that raises is rolled back alone and its caller gets the exception, the others carry on.
    Callers are answered only after the batch's COMMIT, so "returned" still means "on disk";
    when the commit itself fails, or SQLite rolls the whole transaction back (a full disk, an
    I/O error), every unit of the batch gets that error and nothing of it is kept.

    The writer connection begins with ``BEGIN IMMEDIATE``: it takes the write lock once per
    batch (waiting up to the busy timeout for other processes, like any writer), so a unit
    never fails half-way on a lock. It is a separate engine because the driver's transaction
    handling has to be switched off for real savepoints (SQLAlchemy's pysqlite recipe).
    """

    def __init__(self, engine: Engine, *, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self.engine = create_engine(
            engine.url,
            echo=engine.echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _writer_connect)
        event.listen(self.engine, "begin", _begin_immediate)
        self.batches = 0
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        unit = _Unit(fn, kwargs, loop, loop.create_future())
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="db-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(unit)
        return unit.future

    def close(self) -> None:
        """Finish the queued units, then stop the writer thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)
        self.engine.dispose()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stop = True
                    break
                batch.append(unit)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Unit]) -> None:
        self.batches += 1
        try:
            with self.engine.connect() as conn, conn.begin():
                for unit in batch:
                    self._run_unit(conn, unit)
        except BaseException as exc:  # the batch is not on disk: nobody hears "done"
            log.warning("db.group_commit_failed units=%d error=%s", len(batch), exc)
            for unit in batch:
                if unit.error is None:
                    unit.error = exc
        for unit in batch:
            _answer(unit)

    @staticmethod
    def _run_unit(conn: Connection, unit: _Unit) -> None:
        with Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as session:
            try:
                unit.result = unit.context.run(unit.fn, session=session, **unit.kwargs)
                session.commit()  # releases this unit's savepoint
            except Exception as exc:
                unit.error = exc
                try:
                    session.rollback()  # back to this unit's savepoint
                except Exception:
                    # No savepoint to go back to: the transaction is lost or unknown, so
                    # nothing of the batch may be committed.
                    raise exc from None
        if not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            # SQLite rolled the whole transaction back (disk full, I/O error): the units
            # before this one are lost with it.
            raise unit.error or RuntimeError("the group-commit transaction ended early")


def _answer(unit: _Unit) -> None:
    def settle() -> None:
        if unit.future.done():  # the caller was cancelled; the unit ran all the same
            return
        if unit.error is not None:
            unit.future.set_exception(unit.error)
        else:
            unit.future.set_result(unit.result)

    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
        unit.loop.call_soon_threadsafe(settle)


def _writer_connect(dbapi_connection: Any, record: Any) -> None:
    # Transactions are begun and ended by SQLAlchemy (BEGIN IMMEDIATE below), not guessed
    # by the driver, so that SAVEPOINTs nest inside them.
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection, record)


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
