"""The knowledge base's vector store (`loopgram.rag.store`) on Qdrant's local mode.

Vectors are built by hand so that the expected order is known. The `case_*` functions hold
the behaviour; local-mode tests run them, and `test_congruence_with_server` runs the same
ones on a real Qdrant server when `QDRANT_URL` is set (skipped otherwise).
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopgram.errors import LoopgramError
from loopgram.rag import store as store_module
from loopgram.rag.store import KnowledgeBaseUnavailable, SearchMode, VectorStore
from loopgram.rag.types import ChunkRecord, Hit, SparseVector
from loopgram.settings import QdrantSettings

DIM = 8
SERVER_URL = os.environ.get("QDRANT_URL")

MakeStore = Callable[..., VectorStore]


# ------------------------------------------------------------------------------ helpers


def _cid(n: int) -> str:
    return str(uuid.UUID(int=n))


def _unit(*values: float) -> list[float]:
    padded = list(values) + [0.0] * (DIM - len(values))
    norm = math.sqrt(sum(v * v for v in padded))
    return [v / norm for v in padded]


def _sparse(terms: dict[int, float] | None = None) -> SparseVector:
    terms = terms or {}
    return SparseVector(indices=list(terms), values=list(terms.values()))


def _record(
    n: int,
    *,
    document_id: int = 1,
    dense: list[float] | None = None,
    sparse: dict[int, float] | None = None,
    assistant: str | None = None,
    chat_id: int | None = None,
    text: str | None = None,
) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=_cid(n),
        document_id=document_id,
        document=f"doc-{document_id}.md",
        text=text if text is not None else f"chunk {n}",
        lang="en",
        dense=dense if dense is not None else _unit(1.0),
        sparse=_sparse(sparse),
        section="Intro",
        page=n,
        assistant=assistant,
        chat_id=chat_id,
    )


def _ids(hits: list[Hit]) -> list[str]:
    return [hit.chunk_id for hit in hits]


# The corpus of the ordering cases. Query: dense e0, sparse {7: 1.0}.
#   dense ranks:  A (1.0) > B (0.8) > C (0.6) > D (0.2)
#   sparse ranks: B (term 7 weight 2) > C (term 7 weight 1); A and D lack term 7
#   RRF, for any k: B (ranks 2+1) > C (3+2) > A (1+-) > D (4+-)
A, B, C, D = _cid(1), _cid(2), _cid(3), _cid(4)
QUERY_DENSE = _unit(1.0)
QUERY_SPARSE = _sparse({7: 1.0})


def _ordering_corpus() -> list[ChunkRecord]:
    return [
        _record(1, dense=_unit(1.0), sparse={3: 1.0}),
        _record(2, dense=_unit(0.8, 0.6), sparse={7: 2.0, 3: 1.0}),
        _record(3, dense=_unit(0.6, 0.8), sparse={7: 1.0, 4: 1.0}),
        _record(4, dense=_unit(0.2, 0.0, 0.98), sparse={5: 1.0}),
    ]


def _scope_corpus() -> list[ChunkRecord]:
    # (n, assistant, chat_id); all share one dense vector and one sparse term.
    rows = [(1, None, None), (2, "a", None), (3, "b", None), (4, None, 1), (5, None, 2)]
    rows.append((6, "a", 1))
    return [
        _record(n, document_id=n, sparse={7: 1.0}, assistant=asst, chat_id=chat)
        for n, asst, chat in rows
    ]


# --------------------------------------------------------------------- shared cases


def case_modes(store: VectorStore) -> None:
    store.upsert(_ordering_corpus())

    dense = store.search(QUERY_DENSE, QUERY_SPARSE, mode="dense")
    assert _ids(dense) == [A, B, C, D]
    assert [round(h.score, 4) for h in dense] == [1.0, 0.8, 0.6, 0.2]
    assert all(h.scores == {"dense": h.score} for h in dense)

    sparse = store.search(QUERY_DENSE, QUERY_SPARSE, mode="sparse")
    assert _ids(sparse) == [B, C]  # A and D do not have the term
    assert sparse[0].score > sparse[1].score > 0
    assert all(h.scores == {"sparse": h.score} for h in sparse)

    hybrid = store.search(QUERY_DENSE, QUERY_SPARSE, mode="hybrid")
    assert _ids(hybrid) == [B, C, A, D]
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    assert [round(h.scores["dense"], 4) for h in hybrid] == [0.8, 0.6, 1.0, 0.2]
    assert all(set(h.scores) == {"dense"} for h in hybrid)  # sparse scores cost a search

    staged = store.search(QUERY_DENSE, QUERY_SPARSE, mode="hybrid", stage_scores=True)
    assert _ids(staged) == _ids(hybrid)
    assert [h.score for h in staged] == [h.score for h in hybrid]
    by_id = {h.chunk_id: h for h in staged}
    assert set(by_id[B].scores) == {"dense", "sparse"}
    assert set(by_id[A].scores) == {"dense"}  # not in the sparse stage's list
    assert by_id[B].scores["sparse"] == pytest.approx(sparse[0].score, rel=1e-4)
    assert by_id[C].scores["sparse"] == pytest.approx(sparse[1].score, rel=1e-4)

    # The payload comes back whole.
    top = hybrid[0]
    assert (top.document_id, top.document, top.text, top.lang) == (1, "doc-1.md", "chunk 2", "en")
    assert (top.section, top.page) == ("Intro", 2)

    # Fewer results than prefetched.
    assert _ids(store.search(QUERY_DENSE, QUERY_SPARSE, limit=2)) == [B, C]

    # No sparse query: hybrid falls back to the dense stage alone; sparse finds nothing.
    assert _ids(store.search(QUERY_DENSE, _sparse(), mode="hybrid")) == [A, B, C, D]
    assert _ids(store.search(QUERY_DENSE, None, mode="hybrid")) == [A, B, C, D]
    assert store.search(QUERY_DENSE, _sparse(), mode="sparse") == []


def case_scopes(store: VectorStore) -> None:
    store.upsert(_scope_corpus())

    def found(assistant: str | None = None, chat_id: int | None = None) -> dict[str, set[int]]:
        modes: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")
        return {
            mode: {
                h.document_id
                for h in store.search(
                    QUERY_DENSE, QUERY_SPARSE, mode=mode, assistant=assistant, chat_id=chat_id
                )
            }
            for mode in modes
        }

    def same(expected: set[int]) -> dict[str, set[int]]:
        return {"hybrid": expected, "dense": expected, "sparse": expected}

    assert found() == same({1, 2, 3, 4, 5, 6})  # unscoped: everything
    assert found(assistant="a") == same({1, 2, 4, 5, 6})  # global + a; any chat
    assert found(assistant="c") == same({1, 4, 5})  # only chunks without an assistant
    assert found(chat_id=2) == same({1, 2, 3, 5})  # global + chat 2; any assistant
    assert found(assistant="a", chat_id=1) == same({1, 2, 4, 6})
    assert found(assistant="b", chat_id=1) == same({1, 3, 4})


def case_delete_and_count(store: VectorStore) -> None:
    records = [_record(n, document_id=n // 10, dense=_unit(1.0, n / 100)) for n in range(10, 40)]
    store.upsert(records, batch_size=7)  # several batches
    assert store.count() == 30
    assert [store.count(d) for d in (1, 2, 3, 4)] == [10, 10, 10, 0]
    assert store.scroll_document(2) == sorted(_cid(n) for n in range(20, 30))

    store.delete_document(2)
    assert store.count() == 20
    assert [store.count(d) for d in (1, 2, 3)] == [10, 0, 10]
    assert store.scroll_document(2) == []
    assert store.scroll_document(1) == sorted(_cid(n) for n in range(10, 20))
    hits = store.search(QUERY_DENSE, None, limit=50, mode="dense")
    assert {h.document_id for h in hits} == {1, 3}

    store.delete_document(2)  # again: nothing there, no error
    store.delete_document(99)
    assert store.count() == 20

    # By chunk id (what a re-ingest does with the chunks it no longer produces).
    store.delete_points([_cid(30), _cid(31).upper(), _cid(999)])  # any UUID form; unknown: ignored
    store.delete_points([])
    assert store.count() == 18 and store.count(3) == 8
    assert store.scroll_document(3) == sorted(_cid(n) for n in range(32, 40))

    # Same chunk id = replaced, not added.
    store.upsert([_record(10, document_id=1, text="changed")])
    assert store.count() == 18
    (hit,) = [
        h for h in store.search(QUERY_DENSE, None, limit=50, mode="dense") if h.chunk_id == _cid(10)
    ]
    assert hit.text == "changed"


def case_idempotent_create(make: MakeStore) -> None:
    first = make()
    state = first.ensure_collection()
    assert state.created and not state.reingest_needed
    assert first.ensure_collection() is state  # cached
    again = make().ensure_collection()  # a fresh store over the same collection
    assert (again.name, again.created, again.reingest_needed) == (state.name, False, False)


def case_migration(make: MakeStore) -> None:
    old = make(dim=DIM)
    base = old.ensure_collection().name
    old.upsert(_ordering_corpus())

    wider = make(dim=DIM * 2)
    state = wider.ensure_collection()
    assert state.name == f"{base}_v2"
    assert state.created and state.reingest_needed and state.migrated_from == base
    assert "dimensions" in (state.reason or "")
    assert wider.count() == 0  # empty: documents must be ingested again
    wider.upsert([_record(1, dense=[1.0] + [0.0] * (DIM * 2 - 1))])
    assert wider.count() == 1

    settled = make(dim=DIM * 2).ensure_collection()  # the next start finds v2 and keeps it
    assert (settled.name, settled.created, settled.reingest_needed) == (f"{base}_v2", False, False)

    # Going back is a migration too: v1 may hold documents deleted since, it is not reused.
    back = make(dim=DIM).ensure_collection()
    assert (back.name, back.migrated_from) == (f"{base}_v3", f"{base}_v2")
    assert old.count() == 4  # the old store still reads the collection it had


# --------------------------------------------------------------------- local mode


@pytest.fixture
def make_local(tmp_path: Path) -> Iterator[MakeStore]:
    stores: list[VectorStore] = []

    def make(*, dim: int = DIM, path: Path | None = None, collection: str = "kb") -> VectorStore:
        store = VectorStore(path=path or tmp_path / "qdrant", collection=collection, dim=dim)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def local(make_local: MakeStore) -> VectorStore:
    return make_local()


def test_search_modes_order_and_scores(local: VectorStore) -> None:
    case_modes(local)


def test_scopes_null_means_global(local: VectorStore) -> None:
    case_scopes(local)


def test_delete_document_removes_exactly_its_chunks(local: VectorStore) -> None:
    case_delete_and_count(local)


def test_ensure_collection_is_idempotent(make_local: MakeStore) -> None:
    case_idempotent_create(make_local)


def test_dimension_change_migrates_to_new_collection(make_local: MakeStore) -> None:
    case_migration(make_local)


def test_collection_without_sparse_vector_is_migrated(make_local: MakeStore) -> None:
    store = make_local()
    client = store._connect()
    # A collection from before the sparse vector. Tests import no qdrant_client (only the
    # store does), so its models are reached through the store module.
    models = store_module.models  # type: ignore[attr-defined]
    client.create_collection(
        "kb",
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
    )
    state = store.ensure_collection()
    assert (state.name, state.migrated_from, state.reingest_needed) == ("kb_v2", "kb", True)
    assert state.reason == "no sparse vector named 'sparse'"


def test_from_settings_local_creates_folder_and_shares_one_client(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "qdrant"
    settings = QdrantSettings(qdrant_url=None, qdrant_path=str(folder))  # even if QDRANT_URL is set
    one = VectorStore.from_settings(settings, collection="kb", dim=DIM)
    two = VectorStore.from_settings(settings, collection="other", dim=DIM)
    assert one.is_local and not folder.exists()  # nothing opened yet
    one.upsert([_record(1)])
    two.upsert([_record(1), _record(2)])
    assert folder.is_dir()
    assert one._connect() is two._connect()  # one client per folder per process
    assert store_module._local_clients.open_paths().count(folder.resolve()) == 1

    one.close()
    assert two.count() == 2  # the shared client outlives the first store
    two.close()
    assert folder.resolve() not in store_module._local_clients.open_paths()

    with VectorStore.from_settings(settings, collection="kb", dim=DIM) as reopened:
        assert reopened.count() == 1  # persisted, and the folder lock was released


def test_from_settings_without_a_path_uses_data_qdrant(tmp_path: Path) -> None:
    store = VectorStore.from_settings(QdrantSettings(qdrant_url=None, qdrant_path=None))
    assert store.path == tmp_path / "data" / "qdrant"  # tests run in tmp_path
    assert (store.dim, store.base_collection) == (384, "loopgram_chunks")
    assert store.health() and (tmp_path / "data" / "qdrant").is_dir()
    store.close()


def test_bad_input_is_a_value_error_and_writes_nothing(local: VectorStore) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        local.upsert([_record(1), _record(2, dense=[1.0, 0.0])])
    with pytest.raises(ValueError, match="UUID"):
        local.upsert([ChunkRecord("chunk-1", 1, "d", "t", "en", _unit(1.0), _sparse())])
    with pytest.raises(ValueError, match="repeats"):
        repeated = SparseVector([3, 3], [1.0, 1.0])
        local.upsert([_record(1), ChunkRecord(_cid(9), 1, "d", "t", "en", _unit(1.0), repeated)])
    with pytest.raises(ValueError, match="all zeros"):
        local.search([0.0] * DIM, None)
    with pytest.raises(ValueError, match="mode"):
        local.search(QUERY_DENSE, None, mode="fuzzy")  # type: ignore[arg-type]
    assert local.count() == 0


def test_health_local(local: VectorStore) -> None:
    assert local.health() is True


def test_local_folder_locked_elsewhere_is_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with (folder / ".lock").open("w") as held:  # what a Qdrant client in another process holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        store = VectorStore(path=folder, dim=DIM)
        assert store.health() is False
        with pytest.raises(KnowledgeBaseUnavailable):
            store.count()
        store.close()


# --------------------------------------------------------------------- unavailable server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_unavailable(store: VectorStore, *, within: float) -> None:
    calls: list[Callable[[], object]] = [
        store.ensure_collection,
        lambda: store.upsert([_record(1)]),
        lambda: store.search(QUERY_DENSE, QUERY_SPARSE),
        store.count,
        lambda: store.delete_document(1),
        lambda: store.scroll_document(1),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(KnowledgeBaseUnavailable) as caught:
            call()
        assert time.monotonic() - started < within
        assert isinstance(caught.value, LoopgramError)
        assert caught.value.key == "kb-unavailable"
    started = time.monotonic()
    assert store.health() is False
    assert time.monotonic() - started < within


def test_server_down_is_unavailable_quickly() -> None:
    settings = QdrantSettings(qdrant_url=f"http://127.0.0.1:{_closed_port()}")
    store = VectorStore.from_settings(settings, dim=DIM, timeout=1)
    assert not store.is_local
    _assert_unavailable(store, within=2.0)
    store.close()

    with_key = QdrantSettings(
        qdrant_url=f"https://127.0.0.1:{_closed_port()}", qdrant_api_key="secret"
    )
    keyed = VectorStore.from_settings(with_key, dim=DIM, timeout=1)
    assert keyed.health() is False
    with pytest.raises(KnowledgeBaseUnavailable):
        keyed.delete_points([_cid(1)])
    keyed.close()


def test_server_not_answering_times_out_as_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = VectorStore(url=url, dim=DIM, timeout=1)
        started = time.monotonic()
        with pytest.raises(KnowledgeBaseUnavailable):
            store.count()
        assert 0.5 < time.monotonic() - started < 4.0
        assert store.health() is False
        store.close()


# --------------------------------------------------------------------- a real server


@pytest.mark.integration
@pytest.mark.skipif(not SERVER_URL, reason="QDRANT_URL is not set: no Qdrant server to compare")
@pytest.mark.parametrize(
    "case", [case_modes, case_scopes, case_delete_and_count, case_idempotent_create, case_migration]
)
def test_congruence_with_server(case: Callable[..., None]) -> None:
    """The same cases on a Qdrant server, in a collection family of its own, dropped after."""
    assert SERVER_URL
    base = f"loopgram_test_{uuid.uuid4().hex[:10]}"
    stores: list[VectorStore] = []

    def make(*, dim: int = DIM) -> VectorStore:
        store = VectorStore(url=SERVER_URL, collection=base, dim=dim, timeout=10)
        stores.append(store)
        return store

    try:
        if case in (case_idempotent_create, case_migration):
            case(make)
        else:
            case(make())
        assert make().health()
    finally:
        cleaner = make()
        client = cleaner._connect()
        for description in client.get_collections().collections:
            if description.name.startswith(base):
                client.delete_collection(description.name)
        for store in stores:
            store.close()
