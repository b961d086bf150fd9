"""The knowledge base's vector store: the only module that imports `qdrant_client`.

One Qdrant collection holds every chunk as one point: id = `ChunkRecord.chunk_id` (a UUID),
a named dense vector "dense" (cosine, `dim` columns) and a named sparse vector "sparse"
(BM25-style term weights; Qdrant applies IDF at query time, `Modifier.IDF`), and a payload
with `document_id`, `document`, `text`, `lang`, `section`, `page`, `assistant`, `chat_id`.

Where it runs (`VectorStore.from_settings`):

- `QDRANT_URL` set: a Qdrant server over HTTP; payload indexes on `document_id`, `chat_id`
  (integer), `assistant`, `lang` (keyword) are created and kept.
- otherwise local mode in the folder `QDRANT_PATH` (created when missing): everything in
  this process, brute force, numpy. Local mode takes an exclusive lock on its folder, so
  one folder can be opened by ONE client in ONE process: stores built here for the same
  folder share one client (reference-counted, `close()` releases it; the last one closes
  it), and calls on it are serialised by a lock, so threads (`asyncio.to_thread`) may share
  a store. A second process (bot + worker) cannot open the same folder: use a server then.
  Payload indexes have no effect in local mode and are not created there.

Schema and migration (`ensure_collection`): the layout is described by the collection's own
configuration (named dense vector of `dim` columns with cosine distance + named sparse vector
with the IDF modifier), not by a version number: collection metadata is newer than the
Qdrant server in compose.yaml (v1.13), and a marker point would show up in counts and
scrolls. When the newest collection of the family (`<name>`, `<name>_v2`, `<name>_v3`, ...)
does not fit — another dimension (a new embedding model), no sparse vector, no IDF — a NEW
collection `<name>_v<N+1>` is created and used, the old one is left untouched (roll back by
hand; drop it once re-ingested), a warning is logged and the returned `CollectionState` says
`reingest_needed`. Migrating instead of refusing keeps the bot answering (without context
until the documents are ingested again); whoever owns the documents table re-ingests them.
Only the newest collection is ever reused: an older one may still hold documents that were
deleted since, so going back to an older layout is a migration too. Two embedders of the
same dimension (e5 and the hashing fallback are both 384) cannot be told apart from the
layout: give each its own collection name.

Local mode is brute force in Python, linear in the number of chunks (sparse scoring and
payload filters most: at 10 000 chunks a hybrid search takes ~140 ms, ~540 ms with a
chat/assistant scope; dense alone ~8 ms; see scripts/measure_store.py). The search that
retrieval runs, `search_per_language`, does not go through it: in local mode it is ranked by
an in-memory copy of the dense vectors and filter fields (`loopgram.rag.dense_index`,
built from a scroll on first use, kept in step by this store's writes, thrown away and
rebuilt after a write that fails half-way), ~20 ms at 100 000 chunks. Its memory is the
vectors (~150 MB per 100 000 chunks of 384 floats). Qdrant's local upsert stays slow (~1 000
points/s) and warns past 20 000 points; a server is still the choice for big or shared
knowledge bases (several processes cannot open one local folder).

Errors: every failure to reach or use Qdrant (server down, timeout, an error answer, the
local folder locked by another process) is raised as `KnowledgeBaseUnavailable`
(key "kb-unavailable"): callers answer without knowledge-base context then. Bad input (a
vector of the wrong size, a chunk id that is not a UUID, repeated sparse indices) is a bug
in the caller and raises `ValueError` before anything is sent.

Calls block; from async code use `await asyncio.to_thread(store.search, ...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Final, Literal

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from loopgram.errors import LoopgramError
from loopgram.rag.dense_index import DenseIndex, IndexedPoint
from loopgram.rag.types import ChunkRecord, Hit, SparseVector
from loopgram.settings import QdrantSettings

log = logging.getLogger(__name__)

DEFAULT_COLLECTION: Final = "loopgram_chunks"
DEFAULT_DIM: Final = 384
DENSE: Final = "dense"
SPARSE: Final = "sparse"
DEFAULT_LOCAL_PATH: Final = "./data/qdrant"
DEFAULT_TIMEOUT: Final = 5  # seconds, per request to a server (qdrant-client takes an int)

SearchMode = Literal["hybrid", "dense", "sparse"]
SEARCH_MODES: Final[tuple[str, ...]] = ("hybrid", "dense", "sparse")

# Integer fields are indexed as integers, the rest as keywords (server mode only).
PAYLOAD_INDEXES: Final[dict[str, models.PayloadSchemaType]] = {
    "document_id": models.PayloadSchemaType.INTEGER,
    "assistant": models.PayloadSchemaType.KEYWORD,
    "chat_id": models.PayloadSchemaType.INTEGER,
    "lang": models.PayloadSchemaType.KEYWORD,
}

# What a failing Qdrant looks like from here: error answers and transport errors of the
# HTTP client, OS errors (connection refused, disk), the local mode's RuntimeError (folder
# locked by another process, client closed) and its SQLite errors.
_FAILURES: Final = (ApiException, httpx.HTTPError, OSError, RuntimeError, sqlite3.Error)

_MAX_SPARSE_INDEX: Final = 2**32 - 1


class KnowledgeBaseUnavailable(LoopgramError):
    """Qdrant cannot be reached or failed: answer without knowledge-base context."""

    key = "kb-unavailable"


@dataclass(frozen=True)
class CollectionState:
    """What `ensure_collection` found or did."""

    name: str  # the collection now in use
    created: bool  # this call created it
    migrated_from: str | None = None  # an older collection that did not fit (left in place)
    reason: str | None = None  # why it did not fit

    @property
    def reingest_needed(self) -> bool:
        """True when the store moved to a new, empty collection: documents must be ingested
        again (the old collection is not copied: its vectors do not fit the new layout)."""
        return self.migrated_from is not None


# ----------------------------------------------------------------- local clients, shared


@dataclass
class _LocalEntry:
    client: QdrantClient
    lock: threading.RLock
    users: int
    # In-memory dense indexes per collection (see loopgram.rag.dense_index), built on the
    # first per-language search and kept in step by this process's writes.
    indexes: dict[str, DenseIndex] = dataclass_field(default_factory=dict)


class _LocalClients:
    """One local-mode client per folder per process (local mode locks its folder)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, _LocalEntry] = {}

    def acquire(self, path: Path) -> _LocalEntry:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                path.mkdir(parents=True, exist_ok=True)
                # The lock below serialises calls, so the SQLite handle may cross threads.
                client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
                entry = _LocalEntry(client=client, lock=threading.RLock(), users=0)
                self._entries[path] = entry
            entry.users += 1
            return entry

    def release(self, path: Path) -> None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self._entries[path]
                with entry.lock:
                    entry.client.close()

    def open_paths(self) -> list[Path]:
        with self._lock:
            return list(self._entries)

    def close_all(self) -> None:
        """Close every local client (at exit: releases the folder locks cleanly)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            with entry.lock:
                entry.client.close()


_local_clients = _LocalClients()
atexit.register(_local_clients.close_all)


# --------------------------------------------------------------------------- the store


class VectorStore:
    """Chunks in one Qdrant collection: upsert, delete per document, count, hybrid search.

    Build it with `from_settings`. The collection is made ready (`ensure_collection`) on
    first use; call `ensure_collection()` at start-up to learn whether a re-ingest is due.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        path: str | Path | None = None,
        api_key: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        dim: int = DEFAULT_DIM,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError("give exactly one of url (server) or path (local mode)")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,200}", collection):
            raise ValueError(f"bad collection name {collection!r}")
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.url = url
        self._api_key = api_key
        self.path = Path(path).resolve() if path is not None else None
        self.base_collection = collection
        self.dim = dim
        self.timeout = timeout
        self._client: QdrantClient | None = None
        self._entry: _LocalEntry | None = None
        self._call_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._open_lock = threading.Lock()
        self._ensure_lock = threading.Lock()
        self._state: CollectionState | None = None
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: QdrantSettings,
        *,
        collection: str = DEFAULT_COLLECTION,
        dim: int = DEFAULT_DIM,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> VectorStore:
        """A server store when `QDRANT_URL` is set (with `QDRANT_API_KEY`, if any), else
        local mode at `QDRANT_PATH` (unset: ./data/qdrant; `Settings.qdrant_local_path()`
        resolves it under DATA_DIR — pass settings with that path filled in).

        Nothing is opened yet: a down server or a locked folder shows on first use (as
        `KnowledgeBaseUnavailable`) or in `health()`.
        """
        if settings.qdrant_url:
            key = settings.qdrant_api_key
            return cls(
                url=settings.qdrant_url,
                api_key=key.get_secret_value() if key is not None else None,
                collection=collection,
                dim=dim,
                timeout=timeout,
            )
        path = settings.qdrant_path or DEFAULT_LOCAL_PATH
        return cls(path=path, collection=collection, dim=dim, timeout=timeout)

    # ------------------------------------------------------------------ life cycle

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def collection(self) -> str:
        """The collection in use (after `ensure_collection`, which this runs if needed)."""
        return self.ensure_collection().name

    def close(self) -> None:
        """Release the client (a shared local client closes when its last store closes)."""
        with self._open_lock:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
        if client is None:
            return
        if self.path is not None:
            _local_clients.release(self.path)
        else:
            client.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> QdrantClient:
        with self._open_lock:
            if self._closed:
                raise RuntimeError("this VectorStore is closed")
            if self._client is not None:
                return self._client
            if self.path is not None:
                entry = _local_clients.acquire(self.path)
                self._client, self._call_lock, self._entry = entry.client, entry.lock, entry
            else:
                self._client = QdrantClient(
                    url=self.url,
                    api_key=self._api_key,
                    timeout=self.timeout,
                    check_compatibility=False,  # no version probe (a request, a warning)
                )
            return self._client

    @contextlib.contextmanager
    def _qdrant(self, op: str) -> Iterator[QdrantClient]:
        """The client, with failures turned into `KnowledgeBaseUnavailable`."""
        try:
            client = self._connect()
            with self._call_lock:
                yield client
        except _FAILURES as exc:
            where = self.url or str(self.path)
            log.warning(
                "kb.unavailable op=%s where=%s error=%s: %s",
                op,
                where,
                type(exc).__name__,
                _short(exc),
            )
            raise KnowledgeBaseUnavailable(
                f"knowledge base unavailable ({op}): {type(exc).__name__}", op=op
            ) from exc

    def health(self) -> bool:
        """True when Qdrant answers (never raises)."""
        try:
            with self._qdrant("health") as client:
                client.get_collections()
        except KnowledgeBaseUnavailable:
            return False
        return True

    # ------------------------------------------------------------------ collection

    def ensure_collection(self) -> CollectionState:
        """Make the collection ready; idempotent, cheap after the first call.

        Creates `<name>` when the family is empty; uses the newest collection of the family
        when it fits; otherwise creates `<name>_v<N+1>` and reports `reingest_needed` (see the
        module doc). Missing payload indexes are added (server mode).
        """
        state = self._state
        if state is not None:
            return state
        with self._ensure_lock:
            if self._state is not None:
                return self._state
            with self._qdrant("ensure_collection") as client:
                state = self._resolve(client)
                if not self.is_local:
                    self._ensure_indexes(client, state.name)
            self._state = state
        if state.reingest_needed:
            log.warning(
                "kb.migrated from=%s to=%s reason=%r reingest_needed=true",
                state.migrated_from,
                state.name,
                state.reason,
            )
        elif state.created:
            log.info("kb.collection_created name=%s dim=%d", state.name, self.dim)
        return state

    def _resolve(self, client: QdrantClient) -> CollectionState:
        family = self._family(client)
        if not family:
            created = self._create(client, self.base_collection)
            return CollectionState(name=self.base_collection, created=created)
        version, newest = max(family)
        reason = self._misfit(client.get_collection(newest))
        if reason is None:
            return CollectionState(name=newest, created=False)
        name = f"{self.base_collection}_v{version + 1}"
        created = self._create(client, name)
        if not created:  # another process migrated at the same moment: it must fit now
            other = self._misfit(client.get_collection(name))
            if other is not None:
                raise KnowledgeBaseUnavailable(
                    f"collection {name} exists and does not fit either: {other}", op="migrate"
                )
        return CollectionState(name=name, created=created, migrated_from=newest, reason=reason)

    def _family(self, client: QdrantClient) -> list[tuple[int, str]]:
        pattern = re.compile(rf"{re.escape(self.base_collection)}(?:_v(\d+))?")
        family = []
        for description in client.get_collections().collections:
            match = pattern.fullmatch(description.name)
            if match:
                family.append((int(match.group(1) or 1), description.name))
        return family

    def _create(self, client: QdrantClient, name: str) -> bool:
        """Create `name`; False when it already exists (created meanwhile by another process)."""
        if client.collection_exists(name):
            return False
        try:
            client.create_collection(
                collection_name=name,
                vectors_config={
                    DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
        except ApiException:
            if client.collection_exists(name):  # lost a race: someone else created it
                return False
            raise
        except ValueError:  # local mode: "Collection ... already exists"
            if client.collection_exists(name):
                return False
            raise
        return True

    def _misfit(self, info: models.CollectionInfo) -> str | None:
        """Why an existing collection does not fit this store's layout, or None."""
        vectors = info.config.params.vectors
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        if dense is None:
            return f"no dense vector named {DENSE!r}"
        if dense.size != self.dim:
            return f"dense vectors have {dense.size} dimensions, this store needs {self.dim}"
        if dense.distance != models.Distance.COSINE:
            return f"dense distance is {dense.distance}, this store needs cosine"
        sparse = (info.config.params.sparse_vectors or {}).get(SPARSE)
        if sparse is None:
            return f"no sparse vector named {SPARSE!r}"
        if sparse.modifier != models.Modifier.IDF:
            return "the sparse vector has no IDF modifier"
        return None

    def _ensure_indexes(self, client: QdrantClient, name: str) -> None:
        existing = client.get_collection(name).payload_schema
        for field, schema in PAYLOAD_INDEXES.items():
            if field not in existing:
                client.create_payload_index(
                    collection_name=name, field_name=field, field_schema=schema, wait=True
                )

    def drop(self) -> None:
        """Delete the collection in use and everything in it (tests, a full reset); the next
        call creates it again, empty."""
        name = self.collection
        with self._qdrant("drop") as client:
            if self._entry is not None:
                self._entry.indexes.pop(name, None)
            client.delete_collection(name)
        self._state = None

    # ------------------------------------------------------------------ writing

    def upsert(self, records: Sequence[ChunkRecord], *, batch_size: int = 256) -> None:
        """Insert or replace chunks (same `chunk_id` = replaced), `batch_size` per request.

        Every record is checked before anything is sent. To replace a document whose chunks
        changed, `delete_document` first: chunks that are no longer produced stay otherwise.
        """
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        points = [self._point(record) for record in records]
        if not points:
            return
        name = self.collection
        with self._qdrant("upsert") as client, self._index_in_step(name) as index:
            for start in range(0, len(points), batch_size):
                client.upsert(
                    collection_name=name, points=points[start : start + batch_size], wait=True
                )
            if index is not None:
                index.add(_indexed(point) for point in points)

    def delete_document(self, document_id: int) -> None:
        """Remove every chunk of `document_id` (nothing else); no error when there is none."""
        name = self.collection
        with self._qdrant("delete_document") as client, self._index_in_step(name) as index:
            client.delete(
                collection_name=name,
                points_selector=models.FilterSelector(filter=_document_filter(document_id)),
                wait=True,
            )
            if index is not None:
                index.remove_document(document_id)

    def delete_points(self, chunk_ids: Sequence[str]) -> None:
        """Remove chunks by id (ids that are not stored are ignored)."""
        ids = [_point_id(chunk_id) for chunk_id in chunk_ids]
        if not ids:
            return
        name = self.collection
        with self._qdrant("delete_points") as client, self._index_in_step(name) as index:
            for start in range(0, len(ids), 1024):
                client.delete(
                    collection_name=name,
                    points_selector=models.PointIdsList(points=list(ids[start : start + 1024])),
                    wait=True,
                )
            if index is not None:
                index.remove(ids)

    # ------------------------------------------------------------------ reading

    def count(self, document_id: int | None = None) -> int:
        """Chunks stored, all or of one document (exact)."""
        name = self.collection
        flt = None if document_id is None else _document_filter(document_id)
        with self._qdrant("count") as client:
            return client.count(collection_name=name, count_filter=flt, exact=True).count

    def scroll_document(self, document_id: int) -> list[str]:
        """The chunk ids of `document_id`, sorted."""
        name = self.collection
        ids: list[str] = []
        offset: models.ExtendedPointId | None = None
        with self._qdrant("scroll_document") as client:
            while True:
                points, offset = client.scroll(
                    collection_name=name,
                    scroll_filter=_document_filter(document_id),
                    limit=256,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
                ids.extend(str(point.id) for point in points)
                if offset is None:
                    break
        return sorted(ids)

    def iter_records(self, *, batch_size: int = 256) -> Iterator[ChunkRecord]:
        """Every stored chunk with its vectors and payload, in batches (backups). The dense
        vector comes back as Qdrant keeps it (normalised, which cosine ranks the same)."""
        name = self.collection
        offset: models.ExtendedPointId | None = None
        while True:
            with self._qdrant("iter_records") as client:
                points, offset = client.scroll(
                    collection_name=name,
                    limit=batch_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
            for point in points:
                yield _record_of(point)
            if offset is None:
                return

    def search(
        self,
        query_dense: Sequence[float],
        query_sparse: SparseVector | None,
        *,
        limit: int = 20,
        prefetch_limit: int = 50,
        assistant: str | None = None,
        chat_id: int | None = None,
        mode: SearchMode = "hybrid",
        stage_scores: bool = False,
    ) -> list[Hit]:
        """The `limit` best chunks for a query, best first.

        mode "hybrid": two prefetches of `prefetch_limit` candidates each — dense (cosine)
        and sparse (dot product with IDF) — fused by Qdrant with reciprocal rank fusion;
        `Hit.score` is the fused score and `Hit.scores["dense"]` every hit's cosine (from its
        stored vector, which comes back with it). `stage_scores=True` also runs the sparse
        stage again in the same request, so `Hit.scores["sparse"]` is there for each hit that
        was in the sparse list; that costs a second sparse search (in local mode about as
        much as the whole hybrid search), so it is off by default. An empty sparse query
        leaves only the dense prefetch.
        mode "dense" / "sparse": one stage, `Hit.score` = `Hit.scores[mode]`.

        Scope: with `assistant` given, only chunks whose assistant is unset (global) or
        equal to it; the same for `chat_id`. None = not filtered on that field, so a caller
        answering in a chat must pass its chat id, or private chunks of other chats match.
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if limit <= 0:
            raise ValueError("limit must be positive")
        dense = self._dense(query_dense, what="query_dense")
        sparse = _sparse(query_sparse) if query_sparse is not None else None
        if sparse is not None and not sparse.indices:
            sparse = None
        if mode == "sparse" and sparse is None:
            return []
        prefetch_limit = max(prefetch_limit, limit)
        flt = _scope_filter(assistant=assistant, chat_id=chat_id)
        name = self.collection

        if mode == "dense":
            with self._qdrant("search") as client:
                response = client.query_points(
                    name, query=dense, using=DENSE, query_filter=flt, limit=limit
                )
            return [_hit(p, {DENSE: p.score}) for p in response.points]
        if mode == "sparse":
            assert sparse is not None
            with self._qdrant("search") as client:
                response = client.query_points(
                    name, query=sparse, using=SPARSE, query_filter=flt, limit=limit
                )
            return [_hit(p, {SPARSE: p.score}) for p in response.points]

        prefetch = [models.Prefetch(query=dense, using=DENSE, limit=prefetch_limit)]
        if sparse is not None:
            prefetch.append(models.Prefetch(query=sparse, using=SPARSE, limit=prefetch_limit))
        requests = [
            models.QueryRequest(
                prefetch=prefetch,
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                filter=flt,  # the server hands it down to the prefetches
                limit=limit,
                with_payload=True,
                with_vector=[DENSE],  # for each hit's dense score, computed here
            )
        ]
        if stage_scores and sparse is not None:  # the sparse stage again, for its scores
            requests.append(
                models.QueryRequest(
                    query=sparse, using=SPARSE, filter=flt, limit=prefetch_limit, with_payload=False
                )
            )
        with self._qdrant("search") as client:
            responses = client.query_batch_points(name, requests=requests)
        sparse_scores = {str(p.id): p.score for r in responses[1:] for p in r.points}
        unit_query = _unit(dense)
        hits = []
        for point in responses[0].points:
            scores: dict[str, float] = {}
            stored = _dense_of(point)
            if stored is not None:
                scores[DENSE] = _cosine(unit_query, stored)
            if str(point.id) in sparse_scores:
                scores[SPARSE] = sparse_scores[str(point.id)]
            hits.append(_hit(point, scores))
        return hits

    def search_per_language(
        self,
        query_dense: Sequence[float],
        *,
        langs: Sequence[str] = ("en", "ru"),
        limit: int = 50,
        assistant: str | None = None,
        chat_id: int | None = None,
    ) -> dict[str, list[Hit]]:
        """One dense search per document language, in one request: each language's best
        `limit` chunks by cosine (`Hit.scores["dense"]`). Retrieval puts the languages on one
        scale from these lists (see loopgram.rag.retrieve); a single mixed search would let
        same-language chunks crowd out the others (the same-language bias of small
        multilingual embedders)."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        dense = self._dense(query_dense, what="query_dense")
        if self.is_local:
            return self._local_per_language(
                dense, langs=langs, limit=limit, assistant=assistant, chat_id=chat_id
            )
        scope = _scope_filter(assistant=assistant, chat_id=chat_id)
        requests = []
        for lang in langs:
            must: list[models.Condition] = [
                models.FieldCondition(key="lang", match=models.MatchValue(value=lang))
            ]
            if scope is not None:
                must.append(scope)
            requests.append(
                models.QueryRequest(
                    query=dense,
                    using=DENSE,
                    filter=models.Filter(must=must),
                    limit=limit,
                    with_payload=True,
                )
            )
        with self._qdrant("search") as client:
            responses = client.query_batch_points(self.collection, requests=requests)
        return {
            lang: [_hit(p, {DENSE: p.score}) for p in response.points]
            for lang, response in zip(langs, responses, strict=True)
        }

    # ------------------------------------------------------------------ local dense index

    def _local_per_language(
        self,
        dense: list[float],
        *,
        langs: Sequence[str],
        limit: int,
        assistant: str | None,
        chat_id: int | None,
    ) -> dict[str, list[Hit]]:
        """`search_per_language` in local mode: the in-memory index ranks, Qdrant gives
        the payloads of the winners (a lookup by id)."""
        name = self.collection
        with self._qdrant("search") as client:
            index = self._local_index(client, name)
            ranked = index.search_per_language(
                dense, langs=langs, limit=limit, assistant=assistant, chat_id=chat_id
            )
            ids = [point_id for items in ranked.values() for point_id, _ in items]
            records = client.retrieve(name, ids=ids, with_payload=True) if ids else []
        payloads = {str(record.id): record.payload or {} for record in records}
        return {
            lang: [
                _hit_of(point_id, payloads[point_id], score, {DENSE: score})
                for point_id, score in items
                if point_id in payloads
            ]
            for lang, items in ranked.items()
        }

    def _local_index(self, client: QdrantClient, name: str) -> DenseIndex:
        """The collection's in-memory index, built from a scroll on first use (under the
        local client's lock)."""
        assert self._entry is not None
        index = self._entry.indexes.get(name)
        if index is not None:
            return index
        index = DenseIndex(self.dim)
        offset: models.ExtendedPointId | None = None
        while True:
            points, offset = client.scroll(
                collection_name=name,
                limit=2048,
                offset=offset,
                with_payload=["document_id", "lang", "assistant", "chat_id"],
                with_vectors=[DENSE],
            )
            index.add(_indexed_record(point) for point in points if _dense_of(point) is not None)
            if offset is None:
                break
        self._entry.indexes[name] = index
        log.info("kb.local_index collection=%s points=%d", name, len(index))
        return index

    @contextlib.contextmanager
    def _index_in_step(self, name: str) -> Iterator[DenseIndex | None]:
        """The local index to update after a write (None when there is none yet); a write
        that fails half-way throws it away, so the next search rebuilds it from Qdrant."""
        entry = self._entry
        if entry is None:
            yield None
            return
        try:
            yield entry.indexes.get(name)
        except BaseException:
            entry.indexes.pop(name, None)
            raise

    # ------------------------------------------------------------------ conversion

    def _dense(self, vector: Sequence[float], *, what: str) -> list[float]:
        values = [float(x) for x in vector]
        if len(values) != self.dim:
            raise ValueError(f"{what} has {len(values)} dimensions, the store has {self.dim}")
        if not all(math.isfinite(x) for x in values):
            raise ValueError(f"{what} has a NaN or infinite value")
        if not any(values):
            raise ValueError(f"{what} is all zeros (no direction for cosine)")
        return values

    def _point(self, record: ChunkRecord) -> models.PointStruct:
        point_id = _point_id(record.chunk_id)
        vector: dict[str, Any] = {DENSE: self._dense(record.dense, what=f"chunk {point_id}")}
        sparse = _sparse(record.sparse)
        if sparse.indices:
            vector[SPARSE] = sparse
        payload: dict[str, Any] = {
            "document_id": int(record.document_id),
            "document": record.document,
            "text": record.text,
            "lang": record.lang,
            "section": record.section,
            "page": record.page,
            "assistant": record.assistant,
            "chat_id": record.chat_id,
            "archived": record.archived,
        }
        return models.PointStruct(id=point_id, vector=vector, payload=payload)


# ----------------------------------------------------------------------------- helpers


def _point_id(chunk_id: str) -> str:
    """The canonical form of a chunk id (what Qdrant gives back), or ValueError."""
    try:
        return str(uuid.UUID(chunk_id))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"chunk_id must be a UUID string, got {chunk_id!r}") from None


def _sparse(vector: SparseVector) -> models.SparseVector:
    indices = [int(i) for i in vector.indices]
    values = [float(v) for v in vector.values]
    if len(indices) != len(values):
        raise ValueError(f"sparse vector has {len(indices)} indices and {len(values)} values")
    if len(set(indices)) != len(indices):
        raise ValueError("sparse vector repeats an index (sum the weights of a term first)")
    if any(i < 0 or i > _MAX_SPARSE_INDEX for i in indices):
        raise ValueError("sparse indices must be in 0..2**32-1")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("sparse vector has a NaN or infinite value")
    return models.SparseVector(indices=indices, values=values)


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector]


def _dense_of(point: models.ScoredPoint | models.Record) -> list[float] | None:
    vector = point.vector.get(DENSE) if isinstance(point.vector, dict) else None
    if not isinstance(vector, list) or not vector or not isinstance(vector[0], int | float):
        return None
    return [float(x) for x in vector]


def _cosine(unit_query: list[float], stored: list[float]) -> float:
    """As Qdrant scores cosine: both sides normalised, then the dot product."""
    norm = math.sqrt(math.fsum(x * x for x in stored))
    if norm == 0.0 or len(stored) != len(unit_query):
        return 0.0
    return math.fsum(q * x for q, x in zip(unit_query, stored, strict=True)) / norm


def _document_filter(document_id: int) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))]
    )


def _scope_filter(*, assistant: str | None, chat_id: int | None) -> models.Filter | None:
    """Chunks whose field is unset (global) or equal, for each field that is given."""
    must: list[models.Condition] = []
    for key, value in (("assistant", assistant), ("chat_id", chat_id)):
        if value is None:
            continue
        must.append(
            models.Filter(
                should=[
                    models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
                    models.FieldCondition(key=key, match=models.MatchValue(value=value)),
                ]
            )
        )
    return models.Filter(must=must) if must else None


def _hit(point: models.ScoredPoint, scores: dict[str, float]) -> Hit:
    return _hit_of(str(point.id), point.payload or {}, point.score, scores)


def _hit_of(point_id: str, payload: dict[str, Any], score: float, scores: dict[str, float]) -> Hit:
    return Hit(
        chunk_id=point_id,
        document_id=int(payload["document_id"]),
        document=str(payload.get("document", "")),
        text=str(payload.get("text", "")),
        score=float(score),
        lang=str(payload.get("lang", "")),
        section=_opt_str(payload.get("section")),
        page=_opt_int(payload.get("page")),
        scores={name: float(value) for name, value in scores.items()},
        archived=bool(payload.get("archived", False)),
    )


def _indexed(point: models.PointStruct) -> IndexedPoint:
    payload = point.payload or {}
    vector = point.vector[DENSE] if isinstance(point.vector, dict) else point.vector
    return IndexedPoint(
        point_id=str(point.id),
        vector=vector,  # type: ignore[arg-type]  # a dense list, checked by _dense
        lang=str(payload.get("lang", "")),
        document_id=int(payload["document_id"]),
        assistant=_opt_str(payload.get("assistant")),
        chat_id=_opt_int(payload.get("chat_id")),
    )


def _indexed_record(point: models.Record) -> IndexedPoint:
    payload = point.payload or {}
    return IndexedPoint(
        point_id=str(point.id),
        vector=_dense_of(point) or [],
        lang=str(payload.get("lang", "")),
        document_id=int(payload.get("document_id", -1)),
        assistant=_opt_str(payload.get("assistant")),
        chat_id=_opt_int(payload.get("chat_id")),
    )


def _record_of(point: models.Record) -> ChunkRecord:
    payload = point.payload or {}
    vectors = point.vector if isinstance(point.vector, dict) else {}
    sparse = vectors.get(SPARSE)
    indices = list(sparse.indices) if isinstance(sparse, models.SparseVector) else []
    values = list(sparse.values) if isinstance(sparse, models.SparseVector) else []
    return ChunkRecord(
        chunk_id=str(point.id),
        document_id=int(payload.get("document_id", -1)),
        document=str(payload.get("document", "")),
        text=str(payload.get("text", "")),
        lang=str(payload.get("lang", "")),
        dense=_dense_of(point) or [],
        sparse=SparseVector(indices=indices, values=values),
        section=_opt_str(payload.get("section")),
        page=_opt_int(payload.get("page")),
        assistant=_opt_str(payload.get("assistant")),
        chat_id=_opt_int(payload.get("chat_id")),
        archived=bool(payload.get("archived", False)),
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
