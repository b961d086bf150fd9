"""Shared fixtures: migrated SQLite and Postgres databases, Redis, settings.

Postgres and Redis are the real servers on 127.0.0.1 (started by .ci/run when down). Each
test run creates its own Postgres database and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import text

from loopgram import migrate
from loopgram.db import Database
from loopgram.settings import DatabaseSettings, Settings

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _redis_test_db() -> int:
    """Database 15 for a serial run; under pytest-xdist each worker its own (gw0 15, gw1 13,
    gw2 12, ...; 14 is the bench's), so one worker's flush never empties another's queue."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    return 15 if index == 0 else 14 - index


REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_redis_test_db()}")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TABLES = (
    "training_run",
    "adapter",
    "rating",
    "review_item",
    "preference_pair",
    "audit_log",
    "processed_update",
    "review_decision",
    "labeled_example",
    "chunk",
    "document",
    "interaction",
    "chat",
    "label_set",
    '"user"',
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault-injection tests are `serial`: `make test` runs them alone, after the rest
    ran in parallel, so their kill-and-recover timings are those of a quiet machine."""
    for item in items:
        if item.nodeid.startswith("tests/faults/"):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer .env or environment leaks into a test."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name in (
            "DATABASE_URL",
            "REDIS_URL",
            "TELEGRAM_BOT_TOKEN",
            "LLM_BASE_URL",
        ) or name.startswith(
            ("ADMIN_", "MODERATOR_", "WEBHOOK_", "BOT_MODE", "ALLOWED_", "DEFAULT_LANGUAGE")
        ):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(DatabaseSettings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "loopgram.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"loopgram_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(DatabaseSettings(database_url=url))
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    db = Database.from_settings(DatabaseSettings(database_url=pg_database))
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    db.dispose()
    return pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test on both the embedded default (SQLite) and production (Postgres)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.from_settings(DatabaseSettings(database_url=database_url))
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database.from_settings(DatabaseSettings(database_url=sqlite_url))
    yield database
    database.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture
def settings_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings as a user would set them in the environment, built from keyword overrides."""

    def make(**env: str) -> Settings:
        env.setdefault("DATA_DIR", str(tmp_path / "data"))
        env.setdefault("EMBEDDING_MODEL", "hashing")  # tests that need e5 ask for it
        old = {k: os.environ.get(k) for k in env}
        os.environ.update({k: str(v) for k, v in env.items()})
        try:
            return Settings.load()
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return make
