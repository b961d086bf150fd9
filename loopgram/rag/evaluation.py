"""Retrieval quality on the bilingual evaluation set shipped in `loopgram/rag/eval/`.

The set: `eval/corpus/` is a fictional company's handbook, 10 English and 10 Russian
Markdown documents (two policies in an archived and a current version with other numbers,
and near-topic neighbours: refunds / warranty, shipping / international shipping, security /
incidents, data retention / data requests, vacation / sick leave ...). `eval/questions.yaml`
asks about it in both languages: same-language and cross-lingual questions (a Russian
question about an English document and the other way round), distractor questions (the
current policy must rank above the archived one) and questions the corpus does not answer.
A question names its document and a short phrase of it (`answer_text`); the relevant chunks
are the document's chunks that contain the phrase, found after chunking, so the set
survives changes to the chunker.

`run_evaluation()` ingests the corpus with the real `KnowledgeBase` (extraction, chunking,
e5-small, sparse vectors) into a fresh local Qdrant and SQLite in a temporary folder, runs
every question once against the store (one full dense ranking, one full sparse ranking and
the store's own hybrid query), and scores each pipeline variant (`VARIANTS`) on the same
candidates:

- recall@1, recall@5 and MRR@10 per language pair (question -> document: en->en, ru->ru,
  en->ru, ru->en), cross-lingual (the two mixed pairs) and overall. A question counts as
  recalled at k when any of its relevant chunks is in the first k (one answer per question).
- distractor accuracy: the current version's relevant chunk ranks above every chunk of the
  archived version (it must be in the ranking at all).
- the relevance cut, on two scores: the raw dense cosine (what `Retriever.retrieve` cuts
  today) and the calibrated cosine (`calibrated_cosines`: each language's candidates moved
  onto the query language's scale). For each, the best score of an answerable question's
  relevant chunk against the best score of any chunk for the no-answer questions; the
  threshold is the highest that keeps `keep` (95%) of the answerable questions' relevant
  hit, and the report says how many no-answer questions it rejects and what today's
  `MIN_RELEVANCE` does. Per variant (cut on its own score, `Variant.cut`), `cut@4` is
  recall@4 after the cut (the `top_k=4` sources the model gets) and `no_answer_rejected` the
  share of no-answer questions left without any source among the first 20.

The variants: dense, sparse, the store's hybrid (RRF) and today's `Retriever.search` (the
hybrid's candidates re-sorted by cosine) as baselines; the same-language bias fixes (a) a
dense prefetch per document language fused by RRF, (b) per-language normalisation (z-score,
which is Qdrant's DBSF, and mean-centring, the calibrated cosine) and (c) projecting the
embedder's English-Russian direction out of every vector (estimated from the translated
sentence pairs in `eval/language_pairs.yaml`, or transductively from the corpus itself).
Query translation is not measured: there is no translation model in the project.

Per-language dense search: `VectorStore.search` has no language filter, so a per-language
dense prefetch is emulated here from the full dense ranking filtered on the payload's
`lang` (exact search over the same vectors, so it is what a `lang` filter would return).
What the store needs for the winner is in `STORE_QUERY` (printed with the table).

Run: `python -m loopgram.rag.evaluation` (rich tables) or `--json`; `--variants a,b` for a
subset. About 15 seconds on two cores, most of it embedding.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt
import yaml
from sqlmodel import Session, select

from loopgram import migrate
from loopgram.assistants.base import text_language
from loopgram.db import Database
from loopgram.embeddings import Embedder, get_embedder
from loopgram.errors import LoopgramError
from loopgram.models import Chunk, Document
from loopgram.rag import sparse
from loopgram.rag.ingest import KnowledgeBase
from loopgram.rag.rerank import ARCHIVED_PENALTY
from loopgram.rag.retrieve import (
    CENTER_DEPTH,
    MIN_RELEVANCE,
    calibrated_scores,
)
from loopgram.rag.store import VectorStore
from loopgram.settings import DatabaseSettings

log = logging.getLogger(__name__)

EVAL_DIR: Final = Path(__file__).resolve().parent / "eval"
CORPUS_DIR: Final = EVAL_DIR / "corpus"
QUESTIONS_PATH: Final = EVAL_DIR / "questions.yaml"
LANGUAGE_PAIRS_PATH: Final = EVAL_DIR / "language_pairs.yaml"

LANGS: Final = ("en", "ru")
PAIRS: Final = ("en->en", "ru->ru", "en->ru", "ru->en")  # question language -> document's
CROSS_PAIRS: Final = ("en->ru", "ru->en")
KINDS: Final = ("same-language", "cross-lingual", "distractor", "no-answer")

RRF_K: Final = 2  # Qdrant's RRF constant: a list's n-th item (from 0) scores 1 / (n + k)
PREFETCH: Final = 50  # candidates per stage (VectorStore.search's prefetch_limit)
RERANK_DEPTH: Final = 20  # candidates kept from the store's hybrid search (Retriever's)
DEPTH: Final = 10  # ranks kept per question (MRR@10)
TOP_K: Final = 4  # sources put in front of the model (QdrantSettings.kb_top_k)
KEEP: Final = 0.95  # share of answerable questions the relevance cut must keep

Kind = Literal["same-language", "cross-lingual", "distractor", "no-answer"]
Progress = Callable[[str], None]
FloatArray = npt.NDArray[np.float32]


class EvaluationSetError(LoopgramError):
    """The evaluation set does not fit the corpus as chunked (fix questions.yaml)."""

    key = "kb-eval-set"


# ------------------------------------------------------------------------------ the set


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    kind: Kind
    question: str
    answer_doc: str | None
    answer_text: str | None
    distractor_doc: str | None = None

    @property
    def answerable(self) -> bool:
        return self.answer_doc is not None


def load_questions(path: Path = QUESTIONS_PATH) -> list[Question]:
    """The questions of `path`, checked for shape (not against the corpus)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise EvaluationSetError(f"{path}: expected a mapping with a `questions` list")
    questions: list[Question] = []
    for item in items:
        if not isinstance(item, dict):
            raise EvaluationSetError(f"{path}: every question must be a mapping")
        question = Question(
            id=str(item["id"]),
            lang=str(item["lang"]),
            kind=cast(Kind, str(item["kind"])),
            question=str(item["question"]),
            answer_doc=_opt_str(item.get("answer_doc")),
            answer_text=_opt_str(item.get("answer_text")),
            distractor_doc=_opt_str(item.get("distractor_doc")),
        )
        problem = _question_problem(question)
        if problem:
            raise EvaluationSetError(f"{path}: question {question.id}: {problem}")
        questions.append(question)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise EvaluationSetError(f"{path}: question ids repeat")
    return questions


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _question_problem(q: Question) -> str | None:
    if q.lang not in LANGS:
        return f"lang must be one of {LANGS}"
    if q.kind not in KINDS:
        return f"kind must be one of {KINDS}"
    if (q.kind == "no-answer") != (q.answer_doc is None):
        return "answer_doc must be null exactly for kind no-answer"
    if q.answer_doc is not None and not q.answer_text:
        return "an answerable question needs answer_text"
    if (q.kind == "distractor") != (q.distractor_doc is not None):
        return "distractor_doc must be given exactly for kind distractor"
    return None


def normalise(text: str) -> str:
    """For matching `answer_text` in a chunk: NFKC, case-folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# ------------------------------------------------------------------------------ metrics


def first_rank(ranking: Sequence[str], relevant: Collection[str]) -> int | None:
    """The 1-based rank of the first relevant id in `ranking`, None when there is none."""
    for rank, chunk_id in enumerate(ranking, start=1):
        if chunk_id in relevant:
            return rank
    return None


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 when any relevant id is among the first `k` of `ranking`, else 0.0 (one answer
    per question: any of its relevant chunks answers it)."""
    if k <= 0:
        raise ValueError("k must be positive")
    rank = first_rank(ranking[:k], relevant)
    return 0.0 if rank is None else 1.0


def reciprocal_rank(ranking: Sequence[str], relevant: Collection[str], k: int = DEPTH) -> float:
    """1 / rank of the first relevant id within the first `k`, 0.0 when there is none."""
    if k <= 0:
        raise ValueError("k must be positive")
    rank = first_rank(ranking[:k], relevant)
    return 0.0 if rank is None else 1.0 / rank


def ranked_above(ranking: Sequence[str], wanted: Collection[str], other: Collection[str]) -> bool:
    """True when a `wanted` id is in `ranking` and comes before every `other` id."""
    mine = first_rank(ranking, wanted)
    if mine is None:
        return False
    theirs = first_rank(ranking, other)
    return theirs is None or mine < theirs


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


@dataclass(frozen=True)
class Threshold:
    """A relevance cut chosen on best-relevant-hit scores (see `choose_threshold`)."""

    value: float
    kept: float  # share of answerable questions whose relevant hit scores >= value
    rejected: float  # share of no-answer questions whose best hit scores < value


def choose_threshold(
    answerable: Sequence[float], unanswerable: Sequence[float], *, keep: float = KEEP
) -> Threshold:
    """The highest threshold that keeps at least `keep` of `answerable` (scores >= it), and
    what it does to `unanswerable` (the share below it is rejected)."""
    if not answerable:
        raise ValueError("need at least one answerable score")
    if not 0.0 < keep <= 1.0:
        raise ValueError("keep must be in (0, 1]")
    ordered = sorted(answerable)
    allowed = math.floor((1.0 - keep) * len(ordered) + 1e-9)  # may fall below the cut
    value = ordered[allowed]
    kept = sum(score >= value for score in ordered) / len(ordered)
    rejected = (
        sum(score < value for score in unanswerable) / len(unanswerable) if unanswerable else 1.0
    )
    return Threshold(value=value, kept=kept, rejected=rejected)


# ------------------------------------------------------------------------------ fusion


@dataclass(frozen=True)
class Scored:
    chunk_id: str
    lang: str
    score: float


def rrf(lists: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[str]:
    """Reciprocal rank fusion as Qdrant does it: the n-th id (from 0) of a list scores
    1 / (n + k), summed over lists; ties keep the order ids were first seen in."""
    scores: dict[str, float] = {}
    for ids in lists:
        for position, chunk_id in enumerate(ids):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (position + k)
    order = {chunk_id: i for i, chunk_id in enumerate(scores)}
    return sorted(scores, key=lambda c: (-scores[c], order[c]))


def zscores(items: Sequence[Scored]) -> dict[str, float]:
    """Each item's score as a z-score within `items` (sample standard deviation); 0.0 for a
    single item or no spread. Qdrant's DBSF fusion normalises each prefetch the same way up
    to a monotonic map ((z + 3) / 6), so merging by these is DBSF's order."""
    if len(items) < 2:
        return {item.chunk_id: 0.0 for item in items}
    values = [item.score for item in items]
    centre = statistics.fmean(values)
    spread = statistics.stdev(values)
    if spread == 0.0:
        return {item.chunk_id: 0.0 for item in items}
    return {item.chunk_id: (item.score - centre) / spread for item in items}


def by_language(ranking: Sequence[Scored], lang: str, limit: int = PREFETCH) -> list[Scored]:
    """The dense prefetch with a `lang` filter: the first `limit` of that language."""
    return [item for item in ranking if item.lang == lang][:limit]


# ------------------------------------------------------------------------------ variants


def calibrated_cosines(
    per_language: Mapping[str, Sequence[Scored]], query_lang: str, *, depth: int = CENTER_DEPTH
) -> dict[str, float]:
    """`loopgram.rag.retrieve.calibrated_scores` (what production ranks by) on this module's
    candidate lists."""
    return calibrated_scores(
        {lang: [(i.chunk_id, i.score) for i in items] for lang, items in per_language.items()},
        query_lang,
        depth=depth,
    )


@dataclass(frozen=True)
class QueryRun:
    """One question's candidates, from which every variant ranks."""

    question: Question
    query_lang: str  # as detected from the text (what production would know)
    dense: list[Scored]  # every chunk, by cosine, best first
    sparse: list[Scored]  # chunks sharing a term, by BM25 score, best first
    hybrid: list[str]  # the store's own hybrid (dense + sparse, RRF) result
    neutral: dict[str, dict[str, float]]  # direction source -> chunk id -> neutral cosine
    archived: frozenset[str] = frozenset()  # chunks flagged archived at ingest (rag.rerank)

    @property
    def cosine(self) -> dict[str, float]:
        return {item.chunk_id: item.score for item in self.dense}

    def per_language(self, limit: int = PREFETCH) -> dict[str, list[Scored]]:
        """The dense prefetches with a `lang` filter."""
        return {lang: by_language(self.dense, lang, limit) for lang in LANGS}

    @property
    def calibrated(self) -> dict[str, float]:
        return calibrated_cosines(self.per_language(), self.query_lang)

    @property
    def reranked(self) -> dict[str, float]:
        """The calibrated cosine after the rerank stage (loopgram.rag.rerank)."""
        return {
            c: s - (ARCHIVED_PENALTY if c in self.archived else 0.0)
            for c, s in self.calibrated.items()
        }


def _ids(items: Iterable[Scored]) -> list[str]:
    return [item.chunk_id for item in items]


def _best_first(scores: Mapping[str, float]) -> list[str]:
    return sorted(scores, key=lambda c: -scores[c])


def _dense(run: QueryRun) -> list[str]:
    return _ids(run.dense)


def _sparse(run: QueryRun) -> list[str]:
    return _ids(run.sparse)


def _hybrid(run: QueryRun) -> list[str]:
    return list(run.hybrid)


def _hybrid_dense_sort(run: QueryRun) -> list[str]:
    cosine = run.cosine
    return sorted(run.hybrid[:RERANK_DEPTH], key=lambda c: -cosine.get(c, -1.0))


def _per_language_ids(run: QueryRun) -> list[list[str]]:
    return [_ids(items) for items in run.per_language().values()]


def _lang_rrf(run: QueryRun) -> list[str]:
    return rrf([*_per_language_ids(run), _ids(run.sparse[:PREFETCH])])


def _lang_rrf_dense(run: QueryRun) -> list[str]:
    return rrf(_per_language_ids(run))


def _zscore_merged(run: QueryRun) -> list[str]:
    z: dict[str, float] = {}
    for items in run.per_language().values():
        z.update(zscores(items))
    return _best_first(z)


def _lang_zscore_rrf(run: QueryRun) -> list[str]:
    return rrf([_zscore_merged(run), _ids(run.sparse[:PREFETCH])])


def _lang_centered(run: QueryRun) -> list[str]:
    return _best_first(run.calibrated)


def _lang_centered_rerank(run: QueryRun) -> list[str]:
    return _best_first(run.reranked)


def _neutral_parallel(run: QueryRun) -> list[str]:
    return _best_first(run.neutral["parallel"])


def _neutral_corpus(run: QueryRun) -> list[str]:
    return _best_first(run.neutral["corpus"])


CutScore = Literal["cosine", "calibrated", "reranked"]


@dataclass(frozen=True)
class Variant:
    name: str
    rank: Callable[[QueryRun], list[str]]
    description: str
    cut: CutScore = "cosine"  # the score the relevance cut applies to


VARIANTS: Final[dict[str, Variant]] = {
    v.name: v
    for v in (
        Variant("dense", _dense, "dense only (e5-small cosine)"),
        Variant("sparse", _sparse, "sparse only (BM25, Qdrant IDF)"),
        Variant("hybrid", _hybrid, "store hybrid: dense + sparse prefetch, RRF (Qdrant)"),
        Variant(
            "hybrid-dense-sort",
            _hybrid_dense_sort,
            "store hybrid top 20 re-sorted by dense cosine (Retriever.search today)",
        ),
        Variant("lang-rrf", _lang_rrf, "(a) a dense prefetch per document language + sparse, RRF"),
        Variant("lang-rrf-dense", _lang_rrf_dense, "(a') a dense prefetch per language, RRF"),
        Variant(
            "lang-zscore",
            _zscore_merged,
            "(b) dense per language, z-scored within each language, merged (= Qdrant DBSF)",
        ),
        Variant(
            "lang-zscore-rrf",
            _lang_zscore_rrf,
            "(b') per-language z-scored dense (DBSF) + sparse, RRF",
        ),
        Variant(
            "lang-centered",
            _lang_centered,
            "(b'') dense per language, each centred on its mean: the calibrated cosine",
            cut="calibrated",
        ),
        Variant(
            "lang-centered-rerank",
            _lang_centered_rerank,
            "(b''') the calibrated cosine, archived documents' chunks lowered (rag.rerank)",
            cut="reranked",
        ),
        Variant(
            "neutral-parallel",
            _neutral_parallel,
            "(c) cosine with the en-ru direction (from parallel sentences) projected out",
        ),
        Variant(
            "neutral-corpus",
            _neutral_corpus,
            "(c') as (c), the direction from this corpus' own chunks (transductive)",
        ),
    )
}
DEFAULT_VARIANTS: Final = tuple(VARIANTS)
BASELINE: Final = "dense"
CHOSEN: Final = "lang-centered-rerank"

# What the store would run for the chosen variant, in Qdrant's Query API terms, and what
# the retriever then does with the two lists (client side: Qdrant has no mean-centring).
STORE_QUERY: Final = (
    "query_batch_points(requests=[QueryRequest(query=dense, using='dense', filter=scope AND "
    "lang='en', limit=50, with_payload=True), QueryRequest(query=dense, using='dense', "
    "filter=scope AND lang='ru', limit=50, with_payload=True)]) -> per list L: "
    "calibrated = cosine - mean(first 10 cosines of L) + mean(first 10 of the query's "
    "language) -> merge, sort by calibrated, cut at MIN_RELEVANCE on calibrated, top_k"
)


# ------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class ChunkInfo:
    chunk_id: str
    document: str
    lang: str
    text: str


@dataclass
class Corpus:
    chunks: dict[str, ChunkInfo] = field(default_factory=dict)
    doc_lang: dict[str, str] = field(default_factory=dict)  # document name -> language

    def of(self, document: str) -> list[ChunkInfo]:
        return [c for c in self.chunks.values() if c.document == document]

    def relevant(self, q: Question) -> set[str]:
        """The chunks of the answer document that contain the answer phrase."""
        if q.answer_doc is None or q.answer_text is None:
            return set()
        chunks = self.of(q.answer_doc)
        if not chunks:
            raise EvaluationSetError(f"question {q.id}: no chunks of {q.answer_doc}")
        phrase = normalise(q.answer_text)
        found = {c.chunk_id for c in chunks if phrase in normalise(c.text)}
        if not found:
            raise EvaluationSetError(
                f"question {q.id}: {q.answer_text!r} is in no chunk of {q.answer_doc}"
            )
        return found

    def pair(self, q: Question) -> str | None:
        if q.answer_doc is None:
            return None
        return f"{q.lang}->{self.doc_lang[q.answer_doc]}"


def _chunk_rows(*, session: Session) -> list[tuple[str, str, str, str, str]]:
    """(chunk id, document name, chunk language, chunk text, document language) per chunk."""
    documents = {d.id: d for d in session.exec(select(Document)).all()}
    rows = []
    for chunk in session.exec(select(Chunk)).all():
        document = documents[chunk.document_id]
        rows.append((chunk.id, document.name, chunk.lang, chunk.text, document.lang))
    return rows


def _unit(vector: npt.NDArray[np.floating[Any]]) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    out = vector / norm if norm > 0 else vector
    return np.asarray(out, dtype=np.float32)


def language_direction(vectors: FloatArray, langs: Sequence[str]) -> FloatArray:
    """The unit vector from the mean of the English rows to the mean of the Russian ones (a
    corpus's language component, what a same-language bias rides on); zeros without both."""
    mask = np.array([lang == "ru" for lang in langs], dtype=bool)
    if mask.all() or not mask.any():
        return np.zeros(vectors.shape[1], dtype=np.float32)
    return _unit(vectors[mask].mean(axis=0) - vectors[~mask].mean(axis=0))


def parallel_direction(embedder: Embedder, path: Path = LANGUAGE_PAIRS_PATH) -> FloatArray:
    """The embedder's en->ru direction from translated sentence pairs (nothing from the
    corpus): the mean of Russian minus English, embedded as passages and as queries."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, list) or not pairs:
        raise EvaluationSetError(f"{path}: expected a mapping with a `pairs` list")
    english = [str(pair["en"]) for pair in pairs]
    russian = [str(pair["ru"]) for pair in pairs]
    differences = np.vstack(
        [
            embedder.embed_passages(russian) - embedder.embed_passages(english),
            embedder.embed_queries(russian) - embedder.embed_queries(english),
        ]
    )
    return _unit(differences.mean(axis=0))


def neutral_cosines(query: FloatArray, vectors: FloatArray, direction: FloatArray) -> FloatArray:
    """Cosines of `query` with each row of `vectors` after projecting `direction` out of all."""

    def strip(m: FloatArray) -> FloatArray:
        projected = m - np.outer(m @ direction, direction)
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        return np.asarray(projected / np.maximum(norms, 1e-12), dtype=np.float32)

    q = strip(query.reshape(1, -1))[0]
    return np.asarray(strip(vectors) @ q, dtype=np.float32)


def _search_all(
    store: VectorStore, embedder: Embedder, corpus: Corpus, questions: Sequence[Question]
) -> list[QueryRun]:
    ids = list(corpus.chunks)
    langs = [corpus.chunks[c].lang for c in ids]
    vectors = embedder.embed_passages([corpus.chunks[c].text for c in ids])  # cached by ingest
    directions = {
        "parallel": parallel_direction(embedder),
        "corpus": language_direction(vectors, langs),
    }
    queries = embedder.embed_queries([q.question for q in questions])
    everything = len(ids)
    runs = []
    for q, vector in zip(questions, queries, strict=True):
        dense_q = [float(x) for x in vector]
        sparse_q = sparse.encode_query(q.question)
        dense = store.search(dense_q, None, limit=everything, mode="dense")
        found = store.search(dense_q, sparse_q, limit=everything, mode="sparse")
        hybrid = store.search(dense_q, sparse_q, limit=RERANK_DEPTH, mode="hybrid")
        neutral = {
            source: dict(zip(ids, map(float, neutral_cosines(vector, vectors, d)), strict=True))
            for source, d in directions.items()
        }
        runs.append(
            QueryRun(
                question=q,
                query_lang=text_language(q.question),
                dense=[Scored(h.chunk_id, h.lang, h.score) for h in dense],
                sparse=[Scored(h.chunk_id, h.lang, h.score) for h in found],
                hybrid=[h.chunk_id for h in hybrid],
                neutral=neutral,
                archived=frozenset(h.chunk_id for h in dense if h.archived),
            )
        )
    return runs


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": round(ordered[0], 4),
        "p05": round(float(np.quantile(ordered, 0.05)), 4),
        "median": round(statistics.median(ordered), 4),
        "max": round(ordered[-1], 4),
    }


Row = tuple[str, list[str], set[str]]  # language pair, ranking, relevant chunk ids


def _scores(rows: Sequence[Row]) -> dict[str, float]:
    """recall@1/@5 and MRR@10 over the rows."""
    return {
        "n": len(rows),
        "recall@1": round(mean(recall_at_k(r, rel, 1) for _, r, rel in rows), 4),
        "recall@5": round(mean(recall_at_k(r, rel, 5) for _, r, rel in rows), 4),
        "mrr@10": round(mean(reciprocal_rank(r, rel, DEPTH) for _, r, rel in rows), 4),
    }


def _cut_scores(run: QueryRun, cut: CutScore) -> dict[str, float]:
    if cut == "reranked":
        return run.reranked
    return run.calibrated if cut == "calibrated" else run.cosine


def score_variant(
    variant: Variant, runs: Sequence[QueryRun], corpus: Corpus, threshold: float
) -> dict[str, Any]:
    """Every metric of one variant over the runs (see the module's docstring); `threshold`
    is the relevance cut on the variant's cut score."""
    rows: list[Row] = []
    distractors: list[bool] = []
    distractor_failures: list[str] = []
    cut_hits: list[float] = []
    rejected: list[bool] = []
    ranks: dict[str, int | None] = {}
    for run in runs:
        q = run.question
        ranking = variant.rank(run)
        relevance = _cut_scores(run, variant.cut)
        passing = [c for c in ranking[:RERANK_DEPTH] if relevance.get(c, -1.0) >= threshold]
        if not q.answerable:
            rejected.append(not passing)
            continue
        relevant = corpus.relevant(q)
        pair = corpus.pair(q)
        assert pair is not None
        rows.append((pair, ranking, relevant))
        ranks[q.id] = first_rank(ranking[:DEPTH], relevant)
        cut_hits.append(recall_at_k(passing, relevant, TOP_K) if passing else 0.0)
        if q.distractor_doc is not None:
            archived = {c.chunk_id for c in corpus.of(q.distractor_doc)}
            distractors.append(ranked_above(ranking, relevant, archived))
            if not distractors[-1]:
                distractor_failures.append(q.id)
    return {
        "description": variant.description,
        "overall": _scores(rows),
        "pairs": {pair: _scores([r for r in rows if r[0] == pair]) for pair in PAIRS},
        "cross_lingual": _scores([r for r in rows if r[0] in CROSS_PAIRS]),
        "same_language": _scores([r for r in rows if r[0] not in CROSS_PAIRS]),
        "distractor_accuracy": round(mean(float(d) for d in distractors), 4),
        "distractors": len(distractors),
        "distractor_failures": distractor_failures,
        "cut": variant.cut,
        "threshold": threshold,
        f"cut@{TOP_K}": round(mean(cut_hits), 4),
        "no_answer_rejected": round(mean(float(r) for r in rejected), 4),
        "ranks": ranks,
    }


def _at_threshold(
    best_relevant: Mapping[str, Sequence[float]], unanswerable: Sequence[float], value: float
) -> dict[str, Any]:
    answerable = [s for values in best_relevant.values() for s in values]
    return {
        "threshold": value,
        "answerable_kept": round(mean(float(s >= value) for s in answerable), 4),
        "no_answer_rejected": round(mean(float(s < value) for s in unanswerable), 4),
        "kept_per_pair": {
            pair: round(mean(float(s >= value) for s in values), 4)
            for pair, values in best_relevant.items()
        },
    }


def relevance_report(
    runs: Sequence[QueryRun],
    corpus: Corpus,
    *,
    cut: CutScore = "cosine",
    keep: float = KEEP,
    reference: float | None = None,
) -> dict[str, Any]:
    """The `cut` score of each answerable question's best relevant chunk against the best
    score of any chunk for the no-answer questions, the threshold chosen on them, and what
    the `reference` threshold (today's) would do."""
    best_relevant: dict[str, list[float]] = {pair: [] for pair in PAIRS}
    no_answer: dict[str, list[float]] = {lang: [] for lang in LANGS}
    per_question: dict[str, float] = {}
    for run in runs:
        q = run.question
        scores = _cut_scores(run, cut)
        if q.answerable:
            score = max(scores[c] for c in corpus.relevant(q))
            pair = corpus.pair(q)
            assert pair is not None
            best_relevant[pair].append(score)
        else:
            score = max(scores.values())
            no_answer[q.lang].append(score)
        per_question[q.id] = round(score, 4)
    answerable = [s for values in best_relevant.values() for s in values]
    unanswerable = [s for values in no_answer.values() for s in values]
    chosen = choose_threshold(answerable, unanswerable, keep=keep)
    value = math.floor(chosen.value * 1000) / 1000  # rounded down: keeps at least as many
    report: dict[str, Any] = {"cut": cut, "keep": keep}
    report.update(_at_threshold(best_relevant, unanswerable, value))
    if reference is not None:
        report["reference"] = _at_threshold(best_relevant, unanswerable, reference)
    report.update(
        {
            "answerable": {pair: _summary(values) for pair, values in best_relevant.items()},
            "no_answer": {lang: _summary(values) for lang, values in no_answer.items()},
            "scores": per_question,
        }
    )
    return report


def run_evaluation(
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    progress: Progress | None = None,
    model: str = "e5-small",
    corpus_dir: Path = CORPUS_DIR,
    questions_path: Path = QUESTIONS_PATH,
    keep: float = KEEP,
) -> dict[str, Any]:
    """Ingest the corpus into a throw-away knowledge base, run every question, score each
    of `variants` (names in `VARIANTS`); the report as a JSON-ready dict."""
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    say = progress or (lambda _message: None)
    questions = load_questions(questions_path)
    embedder = get_embedder(model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loopgram-rag-eval-") as tmp:
        settings = DatabaseSettings(database_url=f"sqlite:///{Path(tmp) / 'kb.db'}")
        migrate.upgrade(settings)
        db = Database.from_settings(settings)
        store = VectorStore(path=Path(tmp) / "qdrant", dim=embedder.dim)
        try:
            kb = KnowledgeBase(db, store, lambda: embedder)
            say(f"ingesting {corpus_dir} with {embedder.name}")
            ingest = kb.ingest_paths([corpus_dir], progress=lambda p: say(f"  {Path(p).name}"))
            if ingest.errors:
                raise EvaluationSetError(f"ingest failed: {ingest.errors}")
            ingested = time.perf_counter()
            corpus = Corpus()
            for chunk_id, document, lang, text, doc_lang in db.call(_chunk_rows):
                corpus.chunks[chunk_id] = ChunkInfo(chunk_id, document, lang, text)
                corpus.doc_lang[document] = doc_lang
            say(f"searching {len(questions)} questions")
            runs = _search_all(store, embedder, corpus, questions)
        finally:
            store.close()
            db.dispose()
    searched = time.perf_counter()
    cuts: tuple[CutScore, ...] = ("cosine", "calibrated", "reranked")
    relevance = {
        cut: relevance_report(runs, corpus, cut=cut, keep=keep, reference=MIN_RELEVANCE)
        for cut in cuts
    }
    results = {
        name: score_variant(
            VARIANTS[name], runs, corpus, float(relevance[VARIANTS[name].cut]["threshold"])
        )
        for name in variants
    }
    return {
        "embedder": embedder.name,
        "corpus": {
            "documents": len(corpus.doc_lang),
            "documents_by_lang": {
                lang: sum(v == lang for v in corpus.doc_lang.values()) for lang in LANGS
            },
            "chunks": len(corpus.chunks),
            "chunks_by_lang": {
                lang: sum(c.lang == lang for c in corpus.chunks.values()) for lang in LANGS
            },
            "questions": len(questions),
            "questions_by_kind": {kind: sum(q.kind == kind for q in questions) for kind in KINDS},
            "questions_by_pair": {
                pair: sum(corpus.pair(q) == pair for q in questions) for pair in PAIRS
            },
        },
        "variants": results,
        "relevance": relevance,
        "chosen": CHOSEN if CHOSEN in results else None,
        "baseline": BASELINE if BASELINE in results else None,
        "store_query": STORE_QUERY,
        "seconds": {
            "ingest": round(ingested - started, 1),
            "search": round(searched - ingested, 1),
        },
    }


# ------------------------------------------------------------------------------ the script


def render(report: Mapping[str, Any]) -> None:
    """The report as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    corpus = report["corpus"]
    console.print(
        f"[bold]Retrieval evaluation[/bold] — {report['embedder']}, "
        f"{corpus['documents']} documents {corpus['documents_by_lang']}, "
        f"{corpus['chunks']} chunks {corpus['chunks_by_lang']}, "
        f"{corpus['questions']} questions {corpus['questions_by_kind']}; "
        f"per pair {corpus['questions_by_pair']}"
    )
    table = Table(title="recall@1 / recall@5 / MRR@10 per language pair (question -> document)")
    table.add_column("variant")
    for column in (*PAIRS, "cross-lingual", "overall"):
        table.add_column(column, justify="right")
    table.add_column("distractor", justify="right")
    table.add_column(f"cut@{TOP_K}", justify="right")
    table.add_column("no-answer rejected", justify="right")

    def cell(scores: Mapping[str, float]) -> str:
        return f"{scores['recall@1']:.2f} / {scores['recall@5']:.2f} / {scores['mrr@10']:.2f}"

    for name, result in report["variants"].items():
        marker = " *" if name == report.get("chosen") else ""
        table.add_row(
            name + marker,
            *(cell(result["pairs"][pair]) for pair in PAIRS),
            cell(result["cross_lingual"]),
            cell(result["overall"]),
            f"{result['distractor_accuracy']:.2f}",
            f"{result[f'cut@{TOP_K}']:.2f}",
            f"{result['no_answer_rejected']:.2f}",
        )
    console.print(table)
    for cut, relevance in report["relevance"].items():
        console.print(
            f"relevance cut on the {cut} score: threshold {relevance['threshold']:.3f} keeps "
            f"{relevance['answerable_kept']:.0%} of answerable questions' relevant hit "
            f"(per pair {relevance['kept_per_pair']}), rejects "
            f"{relevance['no_answer_rejected']:.0%} of no-answer questions"
        )
        if "reference" in relevance:
            ref = relevance["reference"]
            console.print(
                f"  today's MIN_RELEVANCE {ref['threshold']:.3f} on it would keep "
                f"{ref['answerable_kept']:.0%} (per pair {ref['kept_per_pair']}) and reject "
                f"{ref['no_answer_rejected']:.0%}"
            )
        spread = Table(
            title=f"best {cut} score: relevant chunk (answerable) / any chunk (no answer)"
        )
        for column in ("group", "n", "min", "p05", "median", "max"):
            spread.add_column(column, justify="right")
        groups = [
            *relevance["answerable"].items(),
            *((f"no answer ({lang})", s) for lang, s in relevance["no_answer"].items()),
        ]
        for group, s in groups:
            values = [str(s.get(key, "")) for key in ("n", "min", "p05", "median", "max")]
            spread.add_row(group, *values)
        console.print(spread)
    console.print(f"store query for the chosen variant: {report['store_query']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopgram.rag.evaluation", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, of: {', '.join(VARIANTS)}",
    )
    args = parser.parse_args(argv)
    variants = [v.strip() for v in str(args.variants).split(",") if v.strip()]
    progress = None if args.json else (lambda message: print(message, file=sys.stderr))
    try:
        report = run_evaluation(variants=variants, progress=progress)
    except (LoopgramError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        render(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
