"""`loopgram backup` / `restore`: every table and the knowledge base survive SQLite → archive →
Postgres → archive → SQLite; a damaged archive, another revision or a non-empty target are
refused and change nothing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, insert, select, types

from loopgram import backup, migrate
from loopgram.db import Database
from loopgram.rag.store import DEFAULT_DIM
from loopgram.rag.types import ChunkRecord, SparseVector
from loopgram.settings import DatabaseSettings, Settings

BIG = 10**12  # ids beyond 32 bits (Telegram ids)


# ------------------------------------------------------------------------------- data


def _value(table: Table, column: Any, n: int, ids: dict[str, list[Any]]) -> Any:
    """A value of the column's type for row `n` (1-based), different per row."""
    for fk in column.foreign_keys:
        parent = fk.column.table.name
        if parent == table.name:  # self reference: row 2 points at row 1
            return ids[parent][0] if n > 1 and ids.get(parent) else None
        return ids[parent][(n - 1) % len(ids[parent])]
    kind = column.type
    if isinstance(kind, types.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, types.Boolean):
        return n % 2 == 1
    if isinstance(kind, types.Integer):
        if column.primary_key:
            return BIG + n if isinstance(kind, types.BigInteger) else n
        return (BIG + n) if isinstance(kind, types.BigInteger) else n * 3 - 4  # -1, 2, ...
    if isinstance(kind, types.Float | types.Numeric):
        return n + 0.25
    if isinstance(kind, types.DateTime):
        return datetime(2025, 3, n, 12, 30, 15, 123456, tzinfo=UTC)
    if isinstance(kind, types.JSON):
        return {"n": n, "words": ["ёж", "✓", 'q"uote'], "nested": {"ok": True}}
    if isinstance(kind, types.String):  # Text too
        text = f'{column.name}-{n} Ёлка ✓ "q" \\ \n'
        length = getattr(kind, "length", None)
        return text[:length] if length else text
    raise AssertionError(f"no test value for {table.name}.{column.name} ({kind!r})")


def fill_every_table(db: Database, rows_per_table: int = 2) -> None:
    ids: dict[str, list[Any]] = {}
    with db.engine.begin() as conn:
        for table in backup.tables():
            pk = next(iter(table.primary_key.columns))
            for n in range(1, rows_per_table + 1):
                row = {c.name: _value(table, c, n, ids) for c in table.columns}
                conn.execute(insert(table).values(**row))
                ids.setdefault(table.name, []).append(row[pk.name])


def dump(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row, in the archive's portable form (what a round trip must keep)."""
    with db.engine.connect() as conn:
        return {t.name: list(backup._rows(conn, t)) for t in backup.tables()}


def points(n: int = 5, seed: int = 1) -> list[ChunkRecord]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            ChunkRecord(
                chunk_id=str(uuid.UUID(int=rnd.getrandbits(128))),
                document_id=1 + i % 2,
                document=f"doc-{i % 2}.md",
                text=f"Фрагмент {i}: the quick brown fox ✓",
                lang="ru" if i % 2 else "en",
                dense=[rnd.uniform(-1, 1) for _ in range(DEFAULT_DIM)],
                sparse=SparseVector(indices=[i, 100 + i, 2**31 + i], values=[0.5, 1.5, 2.0]),
                section="Раздел" if i % 2 else None,
                page=i or None,
                assistant="chat" if i == 3 else None,
                chat_id=-100123 if i == 4 else None,
                archived=i == 2,
            )
        )
    return out


def kb_snapshot(settings: Settings) -> dict[str, tuple[Any, ...]]:
    with backup._vector_store(settings) as store:
        return {
            r.chunk_id: (
                r.document_id,
                r.document,
                r.text,
                r.lang,
                [round(x, 5) for x in r.dense],
                r.sparse.indices,
                [round(v, 5) for v in r.sparse.values],
                r.section,
                r.page,
                r.assistant,
                r.chat_id,
                r.archived,
            )
            for r in store.iter_records()
        }


def add_points(settings: Settings, records: list[ChunkRecord]) -> None:
    with backup._vector_store(settings) as store:
        store.upsert(records)


@pytest.fixture
def make_settings(settings_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(url: str, name: str) -> Settings:
        return settings_factory(DATABASE_URL=url, DATA_DIR=str(tmp_path / name))  # type: ignore[no-any-return]

    return make


def _db(settings: Settings) -> Database:
    return Database.from_settings(settings.db)


# ------------------------------------------------------------------------------- tests


@pytest.mark.integration
def test_round_trip_sqlite_to_postgres_and_back(
    make_settings, sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source = make_settings(sqlite_url, "source")
    db = _db(source)
    fill_every_table(db)
    before = dump(db)
    db.dispose()
    assert all(len(rows) == 2 for rows in before.values()), "every table must hold rows"
    add_points(source, points())
    kb_before = kb_snapshot(source)
    assert len(kb_before) == 5

    first = backup.backup(source, tmp_path / "one.tar.gz")
    assert first.rows == 2 * len(before) and first.points == 5

    target = make_settings(pg_url, "pg")
    restored = backup.restore(target, tmp_path / "one.tar.gz")
    assert restored.tables == first.tables and restored.points == 5
    pg = _db(target)
    assert dump(pg) == before
    assert kb_snapshot(target) == kb_before
    # New rows after a restore get fresh ids (the sequences moved past the restored ones).
    audit = next(t for t in backup.tables() if t.name == "audit_log")
    with pg.engine.begin() as conn:
        new_id = conn.execute(
            insert(audit).values(
                action="after-restore", target_type="x", target_id=1, created_at=datetime.now(UTC)
            )
        ).inserted_primary_key[0]
    assert new_id == 3
    with pg.engine.begin() as conn:
        conn.execute(audit.delete().where(audit.c.id == new_id))
    pg.dispose()

    second = backup.backup(target, tmp_path / "two.tar.gz")
    assert second.tables == first.tables
    fresh = tmp_path / "fresh.db"  # no schema at all: restore migrates it first
    back = make_settings(f"sqlite:///{fresh}", "back")
    backup.restore(back, tmp_path / "two.tar.gz")
    sqlite_again = _db(back)
    assert dump(sqlite_again) == before
    sqlite_again.dispose()
    assert kb_snapshot(back) == kb_before


def _counts(settings: Settings) -> dict[str, int]:
    db = _db(settings)
    with db.engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in backup.tables()
        }
    db.dispose()
    return counts


@pytest.fixture
def archive(make_settings, sqlite_url: str, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    source = make_settings(sqlite_url, "source")
    db = _db(source)
    fill_every_table(db, rows_per_table=3)
    db.dispose()
    add_points(source, points(4, seed=2))
    path = tmp_path / "backup.tar.gz"
    backup.backup(source, path)
    return path


@pytest.fixture
def occupied(make_settings, tmp_path: Path, sqlite_template: Path) -> Settings:
    """A target that already holds rows and points (different from the archive's)."""
    path = tmp_path / "occupied.db"
    path.write_bytes(sqlite_template.read_bytes())
    settings = make_settings(f"sqlite:///{path}", "occupied")
    db = _db(settings)
    fill_every_table(db, rows_per_table=1)
    db.dispose()
    add_points(settings, points(2, seed=9))
    return settings  # type: ignore[no-any-return]


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    out = path.with_name(f"cut-{keep}.tar.gz")
    out.write_bytes(data[: int(len(data) * keep)])
    return out


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.97])
def test_truncated_archive_is_refused_and_changes_nothing(
    archive: Path, occupied: Settings, keep: float
) -> None:
    counts, kb = _counts(occupied), kb_snapshot(occupied)
    with pytest.raises(backup.BackupError) as caught:
        backup.restore(occupied, _truncate(archive, keep), force=True)
    assert caught.value.key == "backup-broken"
    assert _counts(occupied) == counts and kb_snapshot(occupied) == kb


def _rewrite(archive: Path, out: Path, change: Any) -> Path:
    """A copy of the archive with one member's bytes changed by `change(name, data)`."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            data = change(info.name, data)
            info.size = len(data)
            import io

            dst.addfile(info, io.BytesIO(data))
    return out


def test_tampered_member_is_refused_and_changes_nothing(
    archive: Path, occupied: Settings, tmp_path: Path
) -> None:
    def flip(name: str, data: bytes) -> bytes:
        return (
            data.replace("Ёлка".encode(), "Ель!".encode(), 1) if name == "db/rating.jsonl" else data
        )

    bad = _rewrite(archive, tmp_path / "tampered.tar.gz", flip)
    counts = _counts(occupied)
    with pytest.raises(backup.BackupError) as caught:
        backup.restore(occupied, bad, force=True)
    assert caught.value.key == "backup-broken" and "db/rating.jsonl" in str(caught.value)
    assert _counts(occupied) == counts


@pytest.mark.parametrize(
    "change",
    [
        {"members": {"db/user.jsonl": [1]}},
        {"knowledge_base": [1]},
        {"knowledge_base": {"points": 4, "dim": "x"}},
        {"version": 2},
    ],
)
def test_a_damaged_manifest_is_a_broken_backup(
    archive: Path, occupied: Settings, tmp_path: Path, change: dict[str, Any]
) -> None:
    """A manifest that is JSON of the wrong shape is damage like any other: `backup-broken`
    (one clear line from the CLI), not an AttributeError or a ValueError."""

    def edit(name: str, data: bytes) -> bytes:
        return (
            json.dumps({**json.loads(data), **change}).encode() if name == "manifest.json" else data
        )

    bad = _rewrite(archive, tmp_path / "manifest.tar.gz", edit)
    counts = _counts(occupied)
    with pytest.raises(backup.BackupError) as caught:
        backup.restore(occupied, bad, force=True)
    assert caught.value.key == "backup-broken"
    assert _counts(occupied) == counts


def test_non_empty_target_needs_force(archive: Path, occupied: Settings) -> None:
    counts, kb = _counts(occupied), kb_snapshot(occupied)
    with pytest.raises(backup.BackupError) as caught:
        backup.restore(occupied, archive)
    assert caught.value.key == "restore-not-empty"
    assert _counts(occupied) == counts and kb_snapshot(occupied) == kb

    summary = backup.restore(occupied, archive, force=True)
    assert summary.replaced and all(n == 3 for n in _counts(occupied).values())
    assert len(kb_snapshot(occupied)) == 4


def test_other_revision_is_refused(archive: Path, make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(DatabaseSettings(database_url=url), "0004")
    target = make_settings(url, "old")
    with pytest.raises(backup.BackupError) as caught:
        backup.restore(target, archive)
    assert caught.value.key == "restore-revision-mismatch"
    assert caught.value.params["current"] == "0004" and caught.value.params["archive"] != "0004"
    db = _db(target)
    with db.engine.connect() as conn:  # nothing was written
        assert conn.exec_driver_sql("SELECT count(*) FROM interaction").scalar_one() == 0
    db.dispose()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "loopgram.cli", *args],
        capture_output=True,
        text=True,
        env={**base, "EMBEDDING_MODEL": "hashing", **env},
        timeout=120,
    )


def test_cli_json_and_one_line_errors(archive: Path, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "DATA_DIR": str(tmp_path / "cli")}
    result = _cli("restore", str(archive), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 3 * len(backup.tables()) and report["points"] == 4

    again = _cli("restore", str(archive), env=env)
    assert again.returncode == 2
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--force" in errors[0] and "Traceback" not in again.stderr

    cut = _truncate(archive, 0.5)
    broken = _cli("restore", str(cut), "--force", env=env)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a complete loopgram backup" in errors[0]

    out = tmp_path / "cli-backup.tar.gz"
    made = _cli("backup", str(out), "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["rows"] == report["rows"] and out.is_file()


def test_backup_does_not_copy_the_local_folder(archive: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert all(n == "manifest.json" or n.startswith(("db/", "kb/")) for n in names)
    assert not any("qdrant" in n or n.endswith(".sqlite") for n in names)


def test_naive_datetimes_are_written_as_utc() -> None:
    column_type = types.DateTime(timezone=True)
    naive = datetime(2025, 1, 2, 3, 4, 5)
    encoded = backup._encode(naive, column_type)
    assert encoded == "2025-01-02T03:04:05+00:00"
    assert backup._decode(encoded, column_type) - naive.replace(tzinfo=UTC) == timedelta(0)


@pytest.fixture
def empty_pg_url() -> Any:
    """A Postgres database with no schema at all (what `restore` migrates first)."""
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    name = f"loopgram_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
def test_a_failed_restore_leaves_a_fresh_database_without_schema(
    make_settings, sqlite_url: str, empty_pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """SQLite keeps a name longer than its column allows, Postgres refuses it: the restore
    fails, and the database it had migrated first is as it was (no tables), as the error's
    "Nothing was changed" says."""
    from sqlalchemy import inspect

    source = make_settings(sqlite_url, "source")
    db = _db(source)
    fill_every_table(db, rows_per_table=1)
    user = next(t for t in backup.tables() if t.name == "user")
    with db.engine.begin() as conn:
        conn.execute(user.update().values(first_name="x" * 300))  # VARCHAR(256)
    db.dispose()
    path = tmp_path / "long.tar.gz"
    backup.backup(source, path)

    target = make_settings(empty_pg_url, "pg")
    add_points(target, points(2, seed=7))
    kb = kb_snapshot(target)

    def tables_there() -> list[str]:
        pg = _db(target)
        names = inspect(pg.engine).get_table_names()
        pg.dispose()
        return names

    with pytest.raises(backup.BackupError) as caught:  # the knowledge base holds points
        backup.restore(target, path)
    assert caught.value.key == "restore-not-empty"
    assert tables_there() == []
    with pytest.raises(Exception, match="too long"):
        backup.restore(target, path, force=True)
    assert tables_there() == [] and kb_snapshot(target) == kb
