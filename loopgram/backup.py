"""`loopgram backup PATH` / `loopgram restore PATH`: the database and the knowledge base in
one portable archive.

The archive is a tar.gz with

- `manifest.json`: format and version, the Alembic revision of the database, the dialect it
  came from, and for every member its row count and SHA-256;
- `db/<table>.jsonl`: every row of every table of `SQLModel.metadata`, one JSON object a
  line, ordered by primary key (datetimes as ISO 8601 with their time zone, bytes in
  base64) — read and written through SQLAlchemy Core, so a SQLite backup restores into
  Postgres and back;
- `kb/points.jsonl`: every knowledge-base point (chunk id, dense and sparse vectors,
  payload fields), scrolled out of Qdrant through `loopgram.rag.store.VectorStore`; the
  local-mode folder is never copied.

Restore checks everything before it changes anything: the archive is read whole, every
member against the manifest's hash and row count and every line parsed; the database must be
at the archive's revision (an unmigrated, empty database is first migrated to it when that is
this version's head), and the database and the knowledge base must be empty unless `force`.
The rows go in one transaction (with `force`, after deleting the old rows in the same
transaction); the knowledge base is restored before that transaction commits, so a failure
there rolls the database back. (With `force`, a knowledge base that fails half-way stays
half-restored: run the restore again.) Postgres sequences are moved past the restored ids.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, select, text, types
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.settings import Settings

log = logging.getLogger(__name__)

FORMAT = "loopgram-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
POINTS = "kb/points.jsonl"
_BATCH = 500

Progress = Callable[[str, int], None]
"""Called with (what, how many) as tables and points are written or read."""


class BackupError(LoopgramError):
    """A backup or restore that cannot be done; `key` names the locale text, `params` its
    arguments. Nothing was changed when it is raised."""

    key = "backup-failed"


@dataclass
class BackupSummary:
    path: str
    revision: str
    tables: dict[str, int] = field(default_factory=dict)
    points: int = 0
    bytes: int = 0
    replaced: bool = False

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "revision": self.revision,
            "tables": self.tables,
            "rows": self.rows,
            "points": self.points,
            "bytes": self.bytes,
            "replaced": self.replaced,
        }


# ----------------------------------------------------------------------------- tables


def tables() -> list[Table]:
    """Every table of the models, parents before children."""
    import loopgram.models  # noqa: F401  (registers the tables)

    return list(SQLModel.metadata.sorted_tables)


def _encode(value: Any, column_type: types.TypeEngine[Any]) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None and getattr(column_type, "timezone", False):
            value = value.replace(tzinfo=UTC)  # SQLite hands back UTC without its zone
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decode(value: Any, column_type: types.TypeEngine[Any]) -> Any:
    if value is None:
        return None
    if isinstance(column_type, types.TypeDecorator):  # SQLModel's AutoString and the like
        column_type = column_type.impl_instance
    if isinstance(column_type, types.DateTime):
        return datetime.fromisoformat(value)
    if isinstance(column_type, types.Date):
        return date.fromisoformat(value)
    if isinstance(column_type, types.Time):
        return time.fromisoformat(value)
    if isinstance(column_type, types.LargeBinary):
        return base64.b64decode(value)
    if isinstance(column_type, types.Numeric) and getattr(column_type, "asdecimal", False):
        return Decimal(value)
    return value


def _rows(conn: Connection, table: Table) -> Iterator[dict[str, Any]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True).execute(select(table).order_by(*order))
    for row in result.mappings():
        yield {column.name: _encode(row[column.name], column.type) for column in table.columns}


def _row_counts(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in tables()
    }


# ----------------------------------------------------------------------------- revisions


def _revisions(settings: Settings, conn: Connection) -> tuple[str | None, str | None]:
    """(the database's current revision, this version's head)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from loopgram.migrate import alembic_config

    current = MigrationContext.configure(conn).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(settings.db)).get_current_head()
    return current, head


# ----------------------------------------------------------------------------- the store


def _vector_store(settings: Settings, dim: int | None = None) -> Any:
    from loopgram.rag.store import DEFAULT_DIM, VectorStore

    resolved = settings.qdrant.model_copy(update={"qdrant_path": settings.qdrant_local_path()})
    return VectorStore.from_settings(resolved, dim=dim or DEFAULT_DIM)


def _kb_error(exc: Exception) -> BackupError:
    return BackupError(str(exc), key="backup-kb-unavailable", detail=str(exc))


def _point_json(record: Any) -> dict[str, Any]:
    return {
        "chunk_id": record.chunk_id,
        "document_id": record.document_id,
        "document": record.document,
        "text": record.text,
        "lang": record.lang,
        "dense": record.dense,
        "sparse": {"indices": record.sparse.indices, "values": record.sparse.values},
        "section": record.section,
        "page": record.page,
        "assistant": record.assistant,
        "chat_id": record.chat_id,
        "archived": record.archived,
    }


def _record(data: dict[str, Any]) -> Any:
    from loopgram.rag.types import ChunkRecord, SparseVector

    sparse = data["sparse"]
    return ChunkRecord(
        chunk_id=str(data["chunk_id"]),
        document_id=int(data["document_id"]),
        document=str(data["document"]),
        text=str(data["text"]),
        lang=str(data["lang"]),
        dense=[float(x) for x in data["dense"]],
        sparse=SparseVector(
            indices=[int(i) for i in sparse["indices"]],
            values=[float(v) for v in sparse["values"]],
        ),
        section=data.get("section"),
        page=data.get("page"),
        assistant=data.get("assistant"),
        chat_id=data.get("chat_id"),
        archived=bool(data.get("archived", False)),
    )


# ----------------------------------------------------------------------------- backup


class _Member:
    """A member written to a temporary file, with its hash and line count."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.path = folder / name.replace("/", "__")
        self._file = self.path.open("wb")
        self._hash = hashlib.sha256()
        self.lines = 0

    def write(self, obj: Any) -> None:
        line = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self._file.write(line)
        self._hash.update(line)
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self._file.close()
        return {"rows": self.lines, "sha256": self._hash.hexdigest()}


def backup(
    settings: Settings, path: Path, *, force: bool = False, progress: Progress | None = None
) -> BackupSummary:
    """Write the database and the knowledge base to the tar.gz `path`."""
    from loopgram.rag.store import KnowledgeBaseUnavailable

    path = Path(path)
    if path.exists() and not force:
        raise BackupError(key="backup-exists", path=str(path))
    if not path.parent.is_dir():
        raise BackupError(key="backup-no-folder", path=str(path.parent))
    db = Database.from_settings(settings.db)
    members: dict[str, dict[str, Any]] = {}
    summary: BackupSummary
    with tempfile.TemporaryDirectory(prefix="loopgram-backup-") as tmp:
        folder = Path(tmp)
        try:
            # One read transaction: a consistent snapshot on Postgres (REPEATABLE READ).
            with db.engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    current, _head = _revisions(settings, conn)
                    if current is None:
                        raise BackupError(key="backup-unmigrated")
                    summary = BackupSummary(path=str(path), revision=current)
                    for table in tables():
                        member = _Member(folder, f"db/{table.name}.jsonl")
                        for row in _rows(conn, table):
                            member.write(row)
                        members[member.name] = member.close()
                        summary.tables[table.name] = member.lines
                        if progress:
                            progress(table.name, member.lines)
            store = _vector_store(settings)
            try:
                points = _Member(folder, POINTS)
                dim = store.dim
                for record in store.iter_records():
                    points.write(_point_json(record))
                    dim = len(record.dense) or dim
                members[POINTS] = points.close()
                summary.points = points.lines
                if progress:
                    progress("knowledge base", points.lines)
            except KnowledgeBaseUnavailable as exc:
                raise _kb_error(exc) from exc
            finally:
                store.close()
        finally:
            db.dispose()
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "alembic_revision": summary.revision,
            "dialect": make_dialect_name(settings),
            "knowledge_base": {"points": summary.points, "dim": dim},
            "members": members,
        }
        partial = path.with_name(path.name + ".partial")
        try:
            with tarfile.open(partial, "w:gz") as tar:
                data = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(data), int(datetime.now(UTC).timestamp())
                tar.addfile(info, io.BytesIO(data))
                for name in members:
                    tar.add(folder / name.replace("/", "__"), arcname=name, recursive=False)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    summary.bytes = path.stat().st_size
    log.info(
        "backup.written path=%s revision=%s rows=%s points=%s",
        path,
        summary.revision,
        summary.rows,
        summary.points,
    )
    return summary


def make_dialect_name(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.db.database_url).get_backend_name()


# ----------------------------------------------------------------------------- reading


@dataclass
class _Archive:
    manifest: dict[str, Any]
    files: dict[str, Path]

    def lines(self, name: str) -> Iterator[dict[str, Any]]:
        with self.files[name].open("rb") as handle:
            for line in handle:
                yield json.loads(line)


def _broken(path: Path, detail: str) -> BackupError:
    return BackupError(detail, key="backup-broken", path=str(path), detail=detail)


def _read_archive(path: Path, folder: Path) -> _Archive:
    """Unpack and check every member; raises `backup-broken` on any damage."""
    if not path.is_file():
        raise BackupError(key="backup-not-found", path=str(path))
    files: dict[str, Path] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
                if name != MANIFEST and not (
                    name.endswith(".jsonl") and name.startswith(("db/", "kb/")) and ".." not in name
                ):
                    raise _broken(path, f"unexpected member {name!r}")
                source = tar.extractfile(info)
                if source is None:
                    raise _broken(path, f"unreadable member {name!r}")
                target = folder / f"{len(files)}.part"
                with target.open("wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                files[name] = target
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _broken(path, f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    if MANIFEST not in files:
        raise _broken(path, "no manifest.json")
    try:
        manifest = json.loads(files[MANIFEST].read_bytes())
    except ValueError as exc:
        raise _broken(path, "manifest.json is not JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _broken(path, "not a loopgram backup")
    if manifest.get("version") != FORMAT_VERSION:
        raise _broken(path, f"backup format version {manifest.get('version')!r} is not supported")
    members = manifest.get("members")
    if not isinstance(members, dict) or not isinstance(manifest.get("alembic_revision"), str):
        raise _broken(path, "manifest.json lacks members or alembic_revision")
    kb_info = manifest.get("knowledge_base") or {}
    if not isinstance(kb_info, dict) or not isinstance(kb_info.get("dim") or 0, int):
        raise _broken(path, "manifest.json has no valid knowledge_base dim")
    for name, expected in members.items():
        if not isinstance(expected, dict):
            raise _broken(path, f"manifest.json has no hash and row count for {name}")
        if name not in files:
            raise _broken(path, f"{name} is missing")
        digest, lines = hashlib.sha256(), 0
        with files[name].open("rb") as handle:
            for line in handle:
                digest.update(line)
                lines += 1
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise _broken(path, f"{name} line {lines} is not JSON") from exc
                if not isinstance(row, dict):
                    raise _broken(path, f"{name} line {lines} is not an object")
        if digest.hexdigest() != expected.get("sha256") or lines != expected.get("rows"):
            raise _broken(path, f"{name} does not match the manifest")
    known = {f"db/{table.name}.jsonl": table for table in tables()}
    for name, table in known.items():
        if name not in members:
            raise _broken(path, f"{name} is missing")
        columns = {column.name for column in table.columns}
        for number, row in enumerate(_Archive(manifest, files).lines(name), start=1):
            extra = set(row) - columns
            if extra:
                raise _broken(path, f"{name} line {number} has unknown columns {sorted(extra)}")
    if POINTS in members:
        for number, point in enumerate(_Archive(manifest, files).lines(POINTS), start=1):
            try:
                _record(point)
            except (KeyError, TypeError, ValueError) as exc:
                raise _broken(path, f"{POINTS} line {number} is not a point") from exc
    return _Archive(manifest, {name: files[name] for name in members})


# ----------------------------------------------------------------------------- restore


def restore(
    settings: Settings, path: Path, *, force: bool = False, progress: Progress | None = None
) -> BackupSummary:
    """Restore the archive `path` (see the module doc for what is checked first)."""
    from loopgram import migrate
    from loopgram.rag.store import KnowledgeBaseUnavailable

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="loopgram-restore-") as tmp:
        archive = _read_archive(path, Path(tmp))
        revision = str(archive.manifest["alembic_revision"])
        kb_info = archive.manifest.get("knowledge_base") or {}
        dim = int(kb_info.get("dim") or 0) or None
        summary = BackupSummary(path=str(path), revision=revision, replaced=force)

        db = Database.from_settings(settings.db)
        store = _vector_store(settings, dim)
        try:
            with db.engine.connect() as conn:
                current, head = _revisions(settings, conn)
            if current is None and revision == head:
                pass  # a fresh database: migrated below, once the knowledge base is checked
            elif current != revision:
                from alembic.script import ScriptDirectory
                from alembic.util import CommandError

                script = ScriptDirectory.from_config(migrate.alembic_config(settings.db))
                try:
                    known = script.get_revision(revision) is not None
                except CommandError:
                    known = False
                raise BackupError(
                    key="restore-revision-mismatch" if known else "restore-unknown-revision",
                    archive=revision,
                    current=current or "none",
                )
            try:
                points_there = store.count()
            except KnowledgeBaseUnavailable as exc:
                raise _kb_error(exc) from exc
            rows_there = 0  # an unmigrated database has no tables, so no rows
            if current is not None:
                with db.engine.connect() as conn:
                    rows_there = sum(_row_counts(conn).values())
            if (rows_there or points_there) and not force:
                raise BackupError(key="restore-not-empty", rows=rows_there, points=points_there)
            if current is None:
                migrate.upgrade(settings.db, revision)
            try:
                _restore_rows(db, archive, summary, store, rows_there, points_there, progress)
            except BaseException:
                if current is None:  # "Nothing was changed": not even the schema
                    _unmigrate(settings, db)
                raise
        except KnowledgeBaseUnavailable as exc:
            raise _kb_error(exc) from exc
        finally:
            store.close()
            db.dispose()
    summary.bytes = path.stat().st_size
    log.info(
        "backup.restored path=%s revision=%s rows=%s points=%s",
        path,
        revision,
        summary.rows,
        summary.points,
    )
    return summary


def _restore_rows(
    db: Database,
    archive: _Archive,
    summary: BackupSummary,
    store: Any,
    rows_there: int,
    points_there: int,
    progress: Progress | None,
) -> None:
    """The rows in one transaction (after deleting the old ones), then the knowledge base."""
    with db.engine.begin() as conn:
        if rows_there:
            for table in reversed(tables()):
                conn.execute(table.delete())
        for table in tables():
            summary.tables[table.name] = _insert(
                conn, table, archive.lines(f"db/{table.name}.jsonl")
            )
            if progress:
                progress(table.name, summary.tables[table.name])
        if conn.dialect.name == "postgresql":
            _move_sequences(conn)
        # Inside the transaction: a knowledge base that fails rolls the rows back.
        summary.points = _restore_points(store, archive, replace=bool(points_there))
        if progress:
            progress("knowledge base", summary.points)


def _unmigrate(settings: Settings, db: Database) -> None:
    """Undo the migration a restore ran on an unmigrated database; a failure here is logged,
    not raised over the restore's own error."""
    from loopgram import migrate

    try:
        migrate.downgrade(settings.db, "base")
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    except Exception:
        log.exception("backup.unmigrate_failed")


def _insert(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    columns = {column.name: column.type for column in table.columns}
    batch: list[dict[str, Any]] = []
    count = 0
    for row in rows:
        batch.append({name: _decode(value, columns[name]) for name, value in row.items()})
        if len(batch) >= _BATCH:
            conn.execute(table.insert(), batch)
            count, batch = count + len(batch), []
    if batch:
        conn.execute(table.insert(), batch)
        count += len(batch)
    return count


def _move_sequences(conn: Connection) -> None:
    """Postgres: the next id of every serial/identity column follows the restored rows."""
    for table in tables():
        for column in table.primary_key.columns:
            if not column.autoincrement or not isinstance(column.type, types.Integer):
                continue
            quoted = conn.dialect.identifier_preparer.format_table(table)
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": quoted, "column": column.name},
            ).scalar_one_or_none()
            if sequence is None:
                continue
            conn.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE(MAX({column.name}), 1), "  # noqa: S608
                    f"MAX({column.name}) IS NOT NULL) FROM {quoted}"
                ),
                {"sequence": sequence},
            )


def _restore_points(store: Any, archive: _Archive, *, replace: bool) -> int:
    if replace:
        store.drop()
    if POINTS not in archive.files:
        return 0
    batch: list[Any] = []
    count = 0
    for point in archive.lines(POINTS):
        batch.append(_record(point))
        if len(batch) >= _BATCH:
            store.upsert(batch)
            count, batch = count + len(batch), []
    if batch:
        store.upsert(batch)
        count += len(batch)
    return count
