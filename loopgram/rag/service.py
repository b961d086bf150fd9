"""Building the knowledge base's parts from the settings, once per process."""

from __future__ import annotations

import threading

from loopgram.db import Database
from loopgram.embeddings import Embedder, get_embedder
from loopgram.rag.ingest import KnowledgeBase
from loopgram.rag.retrieve import Retriever
from loopgram.rag.store import VectorStore
from loopgram.settings import Settings

_stores: dict[str, VectorStore] = {}
_lock = threading.Lock()


def vector_store(settings: Settings) -> VectorStore:
    """The store for these settings (local mode allows one client per folder per process)."""
    resolved = settings.qdrant.model_copy(update={"qdrant_path": settings.qdrant_local_path()})
    key = resolved.qdrant_url or f"path:{resolved.qdrant_path}"
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = VectorStore.from_settings(resolved)
            store.ensure_collection()
            _stores[key] = store
        return store


def embedder_for(settings: Settings) -> Embedder:
    return get_embedder(settings.embedding.embedding_model)


def knowledge_base(settings: Settings, db: Database) -> KnowledgeBase:
    return KnowledgeBase(db, vector_store(settings), lambda: embedder_for(settings))


def retriever(settings: Settings) -> Retriever:
    return Retriever(
        vector_store(settings),
        lambda: embedder_for(settings),
        top_k=settings.qdrant.kb_top_k,
        min_relevance=settings.qdrant.kb_min_relevance,
    )
