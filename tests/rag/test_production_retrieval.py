"""The retrieval the bot uses (Retriever over the real store, e5-small), on the shipped
bilingual evaluation set: cross-lingual questions find their chunk, and questions the corpus
cannot answer mostly get no sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopgram import migrate
from loopgram.db import Database
from loopgram.embeddings import get_embedder
from loopgram.rag import evaluation as ev
from loopgram.rag.ingest import KnowledgeBase
from loopgram.rag.retrieve import Retriever
from loopgram.rag.store import VectorStore
from loopgram.settings import DatabaseSettings

pytestmark = pytest.mark.slow


def test_the_bots_retrieval_on_the_evaluation_set(tmp_path: Path) -> None:
    settings = DatabaseSettings(database_url=f"sqlite:///{tmp_path / 'kb.db'}")
    migrate.upgrade(settings)
    db = Database.from_settings(settings)
    embedder = get_embedder("e5-small")
    store = VectorStore(path=tmp_path / "qdrant", dim=embedder.dim)
    try:
        report = KnowledgeBase(db, store, lambda: embedder).ingest_paths([ev.CORPUS_DIR])
        assert not report.errors and report.documents == 20
        corpus = ev.Corpus()
        for chunk_id, document, lang, text, doc_lang in db.call(ev._chunk_rows):
            corpus.chunks[chunk_id] = ev.ChunkInfo(chunk_id, document, lang, text)
            corpus.doc_lang[document] = doc_lang
        retriever = Retriever(store, lambda: embedder)
        recall: dict[str, list[float]] = {"same": [], "cross": []}
        rejected = []
        current_first = []
        for question in ev.load_questions():
            if question.answer_doc is None:
                rejected.append(
                    not retriever.retrieve(question.question, assistant=None, chat_id=None).hits
                )
                continue
            ranking = [h.chunk_id for h in retriever.search(question.question, limit=5)]
            pair = corpus.pair(question) or ""
            kind = "same" if pair[:2] == pair[-2:] else "cross"
            recall[kind].append(ev.recall_at_k(ranking, corpus.relevant(question), 5))
            if question.distractor_doc is not None:
                everything = [h.chunk_id for h in retriever.search(question.question, limit=50)]
                archived = {c.chunk_id for c in corpus.of(question.distractor_doc)}
                current_first.append(
                    ev.ranked_above(everything, corpus.relevant(question), archived)
                )
    finally:
        store.close()
        db.dispose()
    same = sum(recall["same"]) / len(recall["same"])
    cross = sum(recall["cross"]) / len(recall["cross"])
    # Measured: same-language 1.00, cross-lingual 0.88 (dense-only: 0.33).
    assert same >= 0.95
    assert cross >= 0.75
    assert sum(rejected) / len(rejected) >= 0.5
    # Measured: 1.00 with the rerank stage (0.70 without).
    assert sum(current_first) / len(current_first) >= 0.9
