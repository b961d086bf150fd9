"""Ingest is all or nothing per document: replaced, skipped, refused or rolled back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from loopgram import migrate
from loopgram.db import Database
from loopgram.embeddings import get_embedder
from loopgram.errors import LoopgramError
from loopgram.models import Chunk, Document
from loopgram.rag.ingest import KnowledgeBase
from loopgram.rag.store import KnowledgeBaseUnavailable, VectorStore
from loopgram.rag.types import ChunkRecord
from loopgram.settings import DatabaseSettings

POLICY = "# Refunds\n\nGoods can be returned within {days} days of delivery for a full refund.\n"


class FailingStore(VectorStore):
    """The real store that refuses the next upsert (Qdrant down mid-ingest)."""

    fail_next = False

    def upsert(self, records: Any, *, batch_size: int = 256) -> None:
        if self.fail_next:
            self.fail_next = False
            raise KnowledgeBaseUnavailable("qdrant went away", key="kb-unavailable")
        super().upsert(records, batch_size=batch_size)


@pytest.fixture
def kb(tmp_path: Path) -> Any:
    settings = DatabaseSettings(database_url=f"sqlite:///{tmp_path / 'kb.db'}")
    migrate.upgrade(settings)
    db = Database.from_settings(settings)
    embedder = get_embedder("hashing")
    store = FailingStore(path=tmp_path / "qdrant", dim=embedder.dim)
    yield KnowledgeBase(db, store, lambda: embedder), db, store
    store.close()
    db.dispose()


def documents(db: Database) -> list[Document]:
    return db.call(lambda *, session: list(session.exec(select(Document)).all()))


def chunk_ids(db: Database) -> set[str]:
    return set(db.call(lambda *, session: list(session.exec(select(Chunk.id)).all())))


def test_added_skipped_and_replaced(kb: Any) -> None:
    base, db, store = kb
    first = base.ingest_bytes(POLICY.format(days=30).encode(), name="r.md", source="r.md")
    assert first.status == "added" and first.chunks == 1
    again = base.ingest_bytes(POLICY.format(days=30).encode(), name="r.md", source="r.md")
    assert again.status == "skipped"
    old = chunk_ids(db)
    changed = base.ingest_bytes(POLICY.format(days=14).encode(), name="r.md", source="r.md")
    assert changed.status == "replaced" and changed.document_id == first.document_id
    new = chunk_ids(db)
    assert new and not new & old  # the old chunk rows are gone
    assert set(store.scroll_document(first.document_id)) == new  # and so are their points
    assert [d.status for d in documents(db)] == ["ready"]
    # The same file in another chat's scope is another document.
    scoped = base.ingest_bytes(
        POLICY.format(days=14).encode(), name="r.md", source="r.md", chat_id=-5
    )
    assert scoped.status == "added" and scoped.document_id != first.document_id


def test_a_store_failure_leaves_no_half_indexed_document(kb: Any) -> None:
    base, db, store = kb
    store.fail_next = True
    with pytest.raises(LoopgramError):
        base.ingest_bytes(POLICY.format(days=30).encode(), name="r.md", source="r.md")
    assert documents(db) == [] and chunk_ids(db) == set() and store.count() == 0
    # A failed update keeps the previous version whole and searchable.
    first = base.ingest_bytes(POLICY.format(days=30).encode(), name="r.md", source="r.md")
    before = chunk_ids(db)
    store.fail_next = True
    with pytest.raises(LoopgramError):
        base.ingest_bytes(POLICY.format(days=14).encode(), name="r.md", source="r.md")
    assert chunk_ids(db) == before
    assert set(store.scroll_document(first.document_id or 0)) == before
    (document,) = documents(db)
    assert document.status == "failed"  # so the next ingest of the file tries again
    retried = base.ingest_bytes(POLICY.format(days=14).encode(), name="r.md", source="r.md")
    assert retried.status == "replaced"


@pytest.mark.parametrize(
    ("data", "name", "key"),
    [
        (b"", "empty.md", "file-empty"),
        (b"%PDF-1.4 broken", "broken.pdf", "file-broken"),
        (b"\x89PNG\r\n", "image.png", "file-unsupported"),
        (b"   \n\n  ", "blank.txt", "file-empty"),
    ],
)
def test_bad_files_change_nothing(kb: Any, data: bytes, name: str, key: str) -> None:
    base, db, store = kb
    with pytest.raises(LoopgramError) as error:
        base.ingest_bytes(data, name=name, source=name)
    assert error.value.key == key
    assert documents(db) == [] and store.count() == 0


def test_ingest_paths_reports_per_file(kb: Any, tmp_path: Path) -> None:
    base, _db, _store = kb
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text(POLICY.format(days=30))
    (folder / "sub" / "b.txt").write_text("Office hours are 9 to 18 on weekdays.")
    (folder / "c.pdf").write_bytes(b"not a pdf")
    (folder / ".hidden.md").write_text("secret")
    report = base.ingest_paths([folder])
    assert (report.documents, report.skipped) == (2, 0)
    assert [Path(e["path"]).name for e in report.errors] == ["c.pdf"]
    assert base.ingest_paths([folder]).skipped == 2


def test_delete_removes_points_and_rows(kb: Any) -> None:
    base, db, store = kb
    added = base.ingest_bytes(POLICY.format(days=30).encode(), name="r.md", source="r.md")
    assert base.delete(added.document_id) is True
    assert documents(db) == [] and store.count() == 0
    assert base.delete(added.document_id) is False


def test_records_carry_the_scope(kb: Any) -> None:
    base, _db, store = kb
    captured: list[ChunkRecord] = []
    original = store.upsert

    def spy(records: Any, *, batch_size: int = 256) -> None:
        captured.extend(records)
        original(records, batch_size=batch_size)

    store.upsert = spy  # type: ignore[method-assign]
    base.ingest_bytes(b"# A\n\nText.", name="a.md", source="a.md", assistant="chat", chat_id=7)
    assert [(r.assistant, r.chat_id, r.document) for r in captured] == [("chat", 7, "a.md")]


def test_ingest_paths_says_what_is_wrong_with_a_file(kb: Any, tmp_path: Path) -> None:
    """`loopgram kb ingest` prints these: an error without a message of its own is the
    English text of its key ("file-broken: file-broken" told nothing)."""
    base, _db, _store = kb
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (tmp_path / "latin1.txt").write_bytes(
        "caf\xe9 \xe0 la cr\xe8me ".encode("cp1252") * 3 + b"\x81"
    )
    report = base.ingest_paths([tmp_path])
    errors = {Path(e["path"]).name: e["error"] for e in report.errors}
    assert errors["broken.pdf"] == "file-broken: I couldn't open this file: it looks damaged."
    assert errors["latin1.txt"].startswith("file-not-utf8: I couldn't recognise")
