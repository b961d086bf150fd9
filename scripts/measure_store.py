"""Search latency of the knowledge base's vector store, in local mode (or on a server).

    .venv/bin/python scripts/measure_store.py                 # 10 000 chunks, local mode
    .venv/bin/python scripts/measure_store.py --chunks 100000
    .venv/bin/python scripts/measure_store.py --url http://127.0.0.1:6333

Random unit dense vectors (384 columns, like multilingual-e5-small) and random sparse vectors
(Zipf-distributed term ids, like hashed BM25 terms) are stored in a throw-away collection;
then each search mode is timed over the same queries, with and without a chat/assistant
scope. Prints build time and p50/p95/mean per mode, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loopgram.rag.store import SearchMode, VectorStore
from loopgram.rag.types import ChunkRecord, SparseVector


def _sparse(rng: np.random.Generator, terms: int, vocab: int) -> SparseVector:
    ids = np.unique(np.minimum(rng.zipf(1.3, size=terms), vocab) + rng.integers(0, 7))
    weights = rng.uniform(0.2, 3.0, size=ids.size)
    return SparseVector(indices=[int(i) for i in ids], values=[float(w) for w in weights])


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> npt.NDArray[np.float32]:
    m = rng.standard_normal((rows, dim)).astype(np.float32)
    unit: npt.NDArray[np.float32] = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


def _records(
    rng: np.random.Generator, start: int, count: int, *, dim: int, terms: int, vocab: int
) -> list[ChunkRecord]:
    dense = _unit_rows(rng, count, dim)
    out = []
    for row in range(count):
        n = start + row
        out.append(
            ChunkRecord(
                chunk_id=str(uuid.UUID(int=n + 1)),
                document_id=n // 20,
                document=f"doc-{n // 20}.pdf",
                text=f"chunk {n} " + "lorem ipsum " * 40,
                lang="ru" if n % 2 else "en",
                dense=dense[row].tolist(),
                sparse=_sparse(rng, terms, vocab),
                page=n % 30 + 1,
                # a tenth of the chunks belongs to one of 10 chats, a tenth to an assistant
                chat_id=(n % 10) if n % 10 == 1 else None,
                assistant="label" if n % 10 == 2 else None,
            )
        )
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--terms", type=int, default=60, help="draws per chunk's sparse vector")
    parser.add_argument("--vocab", type=int, default=200_000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--prefetch-limit", type=int, default=50)
    parser.add_argument("--url", default=None, help="a Qdrant server; default: local mode")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cases",
        default="",
        help="comma-separated labels to run (default: all), e.g. dense,hybrid",
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="measure-store-") as tmp:
        collection = f"measure_{uuid.uuid4().hex[:8]}"
        if args.url:
            store = VectorStore(url=args.url, collection=collection, dim=args.dim, timeout=60)
        else:
            store = VectorStore(path=Path(tmp) / "qdrant", collection=collection, dim=args.dim)
        try:
            started = time.perf_counter()
            step = 2_000
            for start in range(0, args.chunks, step):
                count = min(step, args.chunks - start)
                store.upsert(
                    _records(rng, start, count, dim=args.dim, terms=args.terms, vocab=args.vocab),
                    batch_size=500,
                )
            build = time.perf_counter() - started
            print(
                f"where={'server ' + args.url if args.url else 'local mode'} "
                f"chunks={store.count()} dim={args.dim} build_s={build:.1f} "
                f"limit={args.limit} prefetch_limit={args.prefetch_limit} queries={args.queries}"
            )

            queries = _unit_rows(rng, args.queries, args.dim)
            sparse_queries = [_sparse(rng, 8, args.vocab) for _ in range(args.queries)]
            cases: list[tuple[str, SearchMode, bool, bool]] = [
                ("hybrid+stage_scores", "hybrid", True, False),
                ("hybrid", "hybrid", False, False),
                ("dense", "dense", False, False),
                ("sparse", "sparse", False, False),
                ("hybrid scoped", "hybrid", False, True),
                ("dense scoped", "dense", False, True),
            ]
            wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
            for label, mode, stage_scores, scoped in cases:
                if wanted and label not in wanted:
                    continue
                timings = []
                for i in range(args.queries):
                    t0 = time.perf_counter()
                    store.search(
                        queries[i].tolist(),
                        sparse_queries[i],
                        limit=args.limit,
                        prefetch_limit=args.prefetch_limit,
                        mode=mode,
                        stage_scores=stage_scores,
                        assistant="label" if scoped else None,
                        chat_id=1 if scoped else None,
                    )
                    timings.append((time.perf_counter() - t0) * 1000)
                print(
                    f"{label:20s} p50_ms={_percentile(timings, 0.5):8.1f} "
                    f"p95_ms={_percentile(timings, 0.95):8.1f} "
                    f"mean_ms={statistics.fmean(timings):8.1f}"
                )
        finally:
            if args.url:
                store.drop()
            store.close()


if __name__ == "__main__":
    main()
