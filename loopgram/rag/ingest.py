"""Ingest: a file becomes a document of chunks, embedded and stored — all or nothing.

Per document: extract the text (documents.py), clean, chunk by structure, drop duplicate
chunks, scan for prompt injection, embed (the slow part, done before anything is written),
then write the `document` and `chunk` rows and the Qdrant points. A changed file replaces
its chunks (new points first, then the old ones are deleted); an unchanged one (same content
hash, same scope) is skipped. If the vector store fails, the rows are rolled back and the new
points removed, so no half-indexed document is ever searchable.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from loopgram.db import Database
from loopgram.documents import SUPPORTED_SUFFIXES, ExtractedDocument, extract_text
from loopgram.embeddings import Embedder
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import Chunk, Document, utcnow
from loopgram.rag import chunking, injection, sparse
from loopgram.rag.rerank import is_superseded
from loopgram.rag.store import VectorStore
from loopgram.rag.types import ChunkDraft, ChunkRecord

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 20_000_000
MAX_DOCUMENT_CHARS = 2_000_000
EMBED_BATCH = 32
CHUNK_TOKENS = 512

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DocumentOutcome:
    name: str
    status: str  # added, replaced, skipped
    document_id: int | None
    chunks: int
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class IngestReport:
    """The `kb ingest --json` document."""

    documents: int = 0
    chunks: int = 0
    skipped: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcome: DocumentOutcome) -> None:
        if outcome.status == "skipped":
            self.skipped += 1
        else:
            self.documents += 1
            self.chunks += outcome.chunks
        if outcome.findings:
            self.warnings.append({"path": outcome.name, "injection": outcome.findings})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_key(source: str, assistant: str | None, chat_id: int | None) -> str:
    return hashlib.sha256(f"{source}\x00{assistant or ''}\x00{chat_id or ''}".encode()).hexdigest()


def iter_files(paths: Iterable[Path]) -> Iterable[Path]:
    """Files under `paths` (folders recursively, hidden ones skipped) the KB can read."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield child
        else:
            yield path


class KnowledgeBase:
    def __init__(self, db: Database, store: VectorStore, embedder: Callable[[], Embedder]) -> None:
        self.db = db
        self.store = store
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        return self._embedder()

    # --- ingest ---------------------------------------------------------------------------

    def ingest_paths(
        self,
        paths: Sequence[Path],
        *,
        assistant: str | None = None,
        chat_id: int | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        report = IngestReport()
        for path in iter_files(paths):
            if progress is not None:
                progress(str(path))
            try:
                if not path.is_file():
                    raise LoopgramError(f"no such file: {path}", key="file-unsupported")
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise LoopgramError("file too big", key="file-too-big")
                outcome = self.ingest_bytes(
                    path.read_bytes(),
                    name=path.name,
                    source=str(path.resolve()),
                    assistant=assistant,
                    chat_id=chat_id,
                )
            except (LoopgramError, OSError) as exc:
                report.errors.append({"path": str(path), "error": _describe(exc)})
                continue
            report.add(outcome)
        return report

    def ingest_bytes(
        self,
        data: bytes,
        *,
        name: str,
        source: str,
        mime_type: str | None = None,
        assistant: str | None = None,
        chat_id: int | None = None,
        added_by: int | None = None,
    ) -> DocumentOutcome:
        """Index one file (or skip it when unchanged). Raises a LoopgramError the user can
        read for an unreadable file or an unavailable vector store; nothing is written then."""
        if len(data) > MAX_FILE_BYTES:
            raise LoopgramError("file too big", key="file-too-big", limit_kb=MAX_FILE_BYTES // 1000)
        content_hash = hashlib.sha256(data).hexdigest()
        key = source_key(source, assistant, chat_id)
        existing = self.db.call(_document_by_key, key=key)
        if (
            existing is not None
            and existing.content_hash == content_hash
            and existing.status == "ready"
        ):
            return DocumentOutcome(name, "skipped", existing.id, existing.chunks)
        extracted = extract_text(
            data, file_name=name, mime_type=mime_type, max_chars=MAX_DOCUMENT_CHARS
        )
        drafts = self._chunks(extracted)
        if not drafts:
            raise LoopgramError("no text to index", key="file-no-text")
        findings = [asdict(f) for f in injection.scan(extracted.text)][:20]
        vectors = self._embed([d.text for d in drafts])
        archived = is_superseded(name, extracted.text)
        ids = [str(uuid.uuid4()) for _ in drafts]
        document, old_ids = self.db.call(
            _write_rows,
            key=key,
            name=name,
            source=source,
            kind=extracted.kind,
            content_hash=content_hash,
            assistant=assistant,
            chat_id=chat_id,
            added_by=added_by,
            drafts=drafts,
            ids=ids,
            findings=findings,
        )
        records = [
            ChunkRecord(
                chunk_id=chunk_id,
                document_id=document.id or 0,
                document=name,
                text=draft.text,
                lang=draft.lang,
                dense=[float(x) for x in vector],
                sparse=sparse.encode_document(draft.text),
                section=draft.section,
                page=draft.page,
                assistant=assistant,
                chat_id=chat_id,
                archived=archived,
            )
            for chunk_id, draft, vector in zip(ids, drafts, vectors, strict=True)
        ]
        try:
            self.store.upsert(records)
        except Exception:
            # Searchable state is what the store holds: take the new points back out, and
            # put the rows back as they were (a new document is removed again).
            self._undo(document.id or 0, ids, old_ids, restore=existing is not None)
            raise
        if old_ids:
            self.store.delete_points(old_ids)
        self.db.call(_mark_ready, document_id=document.id or 0, old_ids=old_ids)
        status = "replaced" if existing is not None else "added"
        log.info(
            "kb.ingested document_id=%s name=%s status=%s chunks=%s findings=%s",
            document.id,
            name,
            status,
            len(records),
            len(findings),
        )
        return DocumentOutcome(name, status, document.id, len(records), findings)

    def _chunks(self, extracted: ExtractedDocument) -> list[ChunkDraft]:
        # chunk_document cleans the text itself (a PDF's repeated headers need all pages).
        # 300-512 tokens: e5 reads 512 at once; longer chunks would be embedded as an average
        # of windows, blurrier than the chunk the model is shown.
        return chunking.dedup_chunks(chunking.chunk_document(extracted, max_tokens=CHUNK_TOKENS))

    def _embed(self, texts: list[str]) -> list[Any]:
        vectors: list[Any] = []
        for start in range(0, len(texts), EMBED_BATCH):
            vectors.extend(self.embedder.embed_passages(texts[start : start + EMBED_BATCH]))
        return vectors

    def _undo(
        self, document_id: int, new_ids: list[str], old_ids: list[str], *, restore: bool
    ) -> None:
        try:
            self.store.delete_points(new_ids)
        except Exception:
            log.exception("kb.undo_points_failed document_id=%s", document_id)
        self.db.call(
            _undo_rows, document_id=document_id, new_ids=new_ids, keep=restore and bool(old_ids)
        )

    # --- the rest ---------------------------------------------------------------------------

    def delete(self, document_id: int) -> bool:
        """Remove a document: its points first (so it is no longer retrieved), then rows."""
        document = self.db.call(_document, document_id=document_id)
        if document is None:
            return False
        self.store.delete_document(document_id)
        self.db.call(_delete_rows, document_id=document_id)
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LoopgramError):
        # Raised with only a key, its message is the key again: say it in words instead.
        detail = str(exc) if str(exc) != exc.key else t("en", exc.key, **exc.params)
        return f"{exc.key}: {detail}"
    return str(exc)


def _document_by_key(*, session: Session, key: str) -> Document | None:
    return session.exec(select(Document).where(Document.source_key == key)).first()


def _document(*, session: Session, document_id: int) -> Document | None:
    return session.get(Document, document_id)


def _write_rows(
    *,
    session: Session,
    key: str,
    name: str,
    source: str,
    kind: str,
    content_hash: str,
    assistant: str | None,
    chat_id: int | None,
    added_by: int | None,
    drafts: list[ChunkDraft],
    ids: list[str],
    findings: list[dict[str, Any]],
) -> tuple[Document, list[str]]:
    """Write the new chunk rows (the old ones are kept until the new points are in)."""
    document = _document_by_key(session=session, key=key)
    old_ids: list[str] = []
    if document is None:
        document = Document(source_key=key, name=name, source=source, kind=kind, content_hash="")
    else:
        old_ids = list(session.exec(select(Chunk.id).where(Chunk.document_id == document.id)).all())
    document.name = name
    document.kind = kind
    document.content_hash = content_hash
    document.assistant = assistant
    document.chat_id = chat_id
    document.added_by = added_by
    document.status = "indexing"
    document.findings = findings
    document.error = None
    document.updated_at = utcnow()
    langs = [d.lang for d in drafts]
    document.lang = max(set(langs), key=langs.count)
    session.add(document)
    session.flush()
    for chunk_id, draft in zip(ids, drafts, strict=True):
        session.add(
            Chunk(
                id=chunk_id,
                document_id=document.id or 0,
                index=draft.index,
                text=draft.text,
                section=(draft.section or "")[:512] or None,
                page=draft.page,
                lang=draft.lang,
                tokens=draft.tokens,
            )
        )
    session.flush()
    return document, old_ids


def _mark_ready(*, session: Session, document_id: int, old_ids: list[str]) -> None:
    """The new points are in and the old ones gone: drop the old rows, count, mark ready."""
    document = session.get(Document, document_id)
    if document is None:
        return
    if old_ids:
        for chunk in session.exec(select(Chunk).where(col(Chunk.id).in_(old_ids))).all():
            session.delete(chunk)
        session.flush()
    document.chunks = len(
        session.exec(select(Chunk.id).where(Chunk.document_id == document_id)).all()
    )
    document.status = "ready"
    document.updated_at = utcnow()
    session.add(document)


def _undo_rows(*, session: Session, document_id: int, new_ids: list[str], keep: bool) -> None:
    for chunk in session.exec(select(Chunk).where(col(Chunk.id).in_(new_ids))).all():
        session.delete(chunk)
    document = session.get(Document, document_id)
    if document is None:
        return
    if keep:
        # The previous version's points and rows are untouched and still searchable; the
        # failed state makes the next ingest of this file try again.
        document.status = "failed"
        document.error = "indexing the new version failed; the previous one is still in use"
    else:
        session.delete(document)


def _delete_rows(*, session: Session, document_id: int) -> None:
    document = session.get(Document, document_id)
    if document is not None:
        session.delete(document)
