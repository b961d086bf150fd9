"""The in-memory dense index behind local-mode retrieval (`loopgram.rag.dense_index`) and the
store's use of it: same answers as a plain reference over what Qdrant holds, through
inserts, replacements, deletions, a restart and a write that fails half-way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loopgram.rag.dense_index import DenseIndex, IndexedPoint
from loopgram.rag.store import KnowledgeBaseUnavailable, VectorStore
from loopgram.rag.types import ChunkRecord, SparseVector

DIM = 16
LANGS = ("en", "ru")
SCOPES = [(None, None), ("paraphrase", None), (None, 7), ("summarize", 8), ("label", 7)]


def _records(rng: np.random.Generator, start: int, count: int) -> list[ChunkRecord]:
    out = []
    for n in range(start, start + count):
        out.append(
            ChunkRecord(
                chunk_id=str(uuid.UUID(int=n + 1)),
                document_id=n // 5,
                document=f"doc-{n // 5}.md",
                text=f"chunk {n}",
                lang=LANGS[int(rng.integers(2))],
                dense=rng.standard_normal(DIM).tolist(),
                sparse=SparseVector(indices=[], values=[]),
                assistant=[None, "paraphrase", "summarize"][int(rng.integers(3))],
                chat_id=[None, 7, 8][int(rng.integers(3))],
            )
        )
    return out


def _reference(
    records: dict[str, ChunkRecord],
    query: list[float],
    *,
    assistant: str | None,
    chat_id: int | None,
    limit: int,
) -> dict[str, list[str]]:
    """Per-language top ids by cosine, scope as Qdrant's filter says: unset or equal."""
    q = np.asarray(query) / np.linalg.norm(query)
    out: dict[str, list[str]] = {}
    for lang in LANGS:
        scored = []
        for record in records.values():
            if record.lang != lang:
                continue
            if assistant is not None and record.assistant not in (None, assistant):
                continue
            if chat_id is not None and record.chat_id not in (None, chat_id):
                continue
            v = np.asarray(record.dense)
            scored.append((float(v @ q / np.linalg.norm(v)), record.chunk_id))
        scored.sort(reverse=True)
        out[lang] = [chunk_id for _, chunk_id in scored[:limit]]
    return out


def _assert_matches(
    store: VectorStore, records: dict[str, ChunkRecord], rng: np.random.Generator
) -> None:
    for assistant, chat_id in SCOPES:
        query = rng.standard_normal(DIM).tolist()
        got = store.search_per_language(query, limit=6, assistant=assistant, chat_id=chat_id)
        want = _reference(records, query, assistant=assistant, chat_id=chat_id, limit=6)
        assert {lang: [h.chunk_id for h in hits] for lang, hits in got.items()} == want
        for hits in got.values():
            for hit in hits:  # payloads come back whole, scores are cosines
                record = records[hit.chunk_id]
                assert (hit.text, hit.document_id, hit.lang) == (
                    record.text,
                    record.document_id,
                    record.lang,
                )
                assert -1.0 <= hit.scores["dense"] <= 1.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture
def store(folder: Path) -> Iterator[VectorStore]:
    with VectorStore(path=folder, collection="idx", dim=DIM) as s:
        yield s


def test_store_search_matches_reference_through_writes(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    records = {r.chunk_id: r for r in _records(rng, 0, 120)}
    store.upsert(list(records.values()))
    _assert_matches(store, records, rng)  # first search builds the index from a scroll

    more = _records(rng, 120, 60)  # inserted after the index exists
    store.upsert(more, batch_size=16)
    records.update({r.chunk_id: r for r in more})
    _assert_matches(store, records, rng)

    replaced = _records(np.random.default_rng(99), 0, 10)  # same ids, new vectors/fields
    store.upsert(replaced)
    records.update({r.chunk_id: r for r in replaced})
    _assert_matches(store, records, rng)

    store.delete_document(3)
    records = {k: r for k, r in records.items() if r.document_id != 3}
    gone = [r.chunk_id for r in list(records.values())[:25]]
    store.delete_points(gone)
    for chunk_id in gone:
        records.pop(chunk_id)
    _assert_matches(store, records, rng)
    assert store.count() == len(records)


def test_index_is_rebuilt_after_a_restart(folder: Path) -> None:
    rng = np.random.default_rng(5)
    records = {r.chunk_id: r for r in _records(rng, 0, 80)}
    with VectorStore(path=folder, collection="idx", dim=DIM) as first:
        first.upsert(list(records.values()))
        first.search_per_language(rng.standard_normal(DIM).tolist(), limit=3)
    with VectorStore(path=folder, collection="idx", dim=DIM) as second:
        _assert_matches(second, records, rng)


def test_failed_write_drops_the_index_and_the_next_search_sees_qdrant(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    records = {r.chunk_id: r for r in _records(rng, 0, 40)}
    store.upsert(list(records.values()))
    _assert_matches(store, records, rng)

    client = store._connect()
    real_upsert = client.upsert
    calls = {"n": 0}

    def second_batch_fails(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_upsert(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "upsert", second_batch_fails)
    batch = _records(rng, 40, 20)
    with pytest.raises(KnowledgeBaseUnavailable):
        store.upsert(batch, batch_size=10)
    monkeypatch.undo()
    records.update({r.chunk_id: r for r in batch[:10]})  # the first batch did land
    _assert_matches(store, records, rng)


def test_drop_forgets_the_index(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    store.upsert(_records(rng, 0, 30))
    store.search_per_language(rng.standard_normal(DIM).tolist(), limit=3)
    store.drop()
    empty = store.search_per_language(rng.standard_normal(DIM).tolist(), limit=3)
    assert empty == {"en": [], "ru": []}


# ------------------------------------------------------------------ the index alone


def _point(n: int, vector: list[float], lang: str = "en", **fields: object) -> IndexedPoint:
    return IndexedPoint(
        point_id=f"p{n}",
        vector=vector,
        lang=lang,
        document_id=int(fields.get("document_id", n)),  # type: ignore[call-overload]
        assistant=fields.get("assistant"),  # type: ignore[arg-type]
        chat_id=fields.get("chat_id"),  # type: ignore[arg-type]
    )


def test_compaction_keeps_answers_and_bounds_rows() -> None:
    rng = np.random.default_rng(1)
    index = DenseIndex(4)
    vectors = {f"p{n}": rng.standard_normal(4).tolist() for n in range(3000)}
    index.add(_point(n, vectors[f"p{n}"]) for n in range(3000))
    index.remove(f"p{n}" for n in range(2000))  # two thirds gone: compacted
    assert len(index) == 1000
    assert index._rows == 1000
    query = [1.0, 0.0, 0.0, 0.0]
    got = index.search_per_language(query, langs=["en"], limit=5)["en"]
    unit = {k: np.asarray(v) / np.linalg.norm(v) for k, v in vectors.items()}
    want = sorted((k for k in unit if int(k[1:]) >= 2000), key=lambda k: -unit[k][0])[:5]
    assert [point_id for point_id, _ in got] == want


def test_unknown_language_or_assistant_and_bad_queries() -> None:
    index = DenseIndex(3)
    index.add([_point(1, [1, 0, 0], assistant="a"), _point(2, [0, 1, 0])])
    assert index.search_per_language([1, 0, 0], langs=["ru"], limit=3) == {"ru": []}
    only_global = index.search_per_language([1, 0, 0], langs=["en"], limit=3, assistant="zzz")
    assert [p for p, _ in only_global["en"]] == ["p2"]
    for bad in ([0, 0, 0], [1, 0], [float("nan"), 0, 0]):
        with pytest.raises(ValueError):
            index.search_per_language(bad, langs=["en"], limit=1)
    with pytest.raises(ValueError):
        index.add([_point(3, [1, 0])])
