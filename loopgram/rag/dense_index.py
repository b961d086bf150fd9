"""An in-memory copy of a local-mode collection's dense vectors, searched with one matrix
product: what makes local-mode retrieval fast.

Qdrant's local mode scores points one by one in Python and evaluates payload filters per
point (~15 us per point and language), so the per-language search that retrieval runs costs
~300 ms at 10 000 chunks and seconds at 100 000. This index keeps the same vectors as one
float32 matrix of unit rows plus the filter fields as numpy columns (language, assistant,
chat), so a per-language, scoped search is a mask, one matrix-vector product and an
`argpartition` — a few milliseconds at 100 000 chunks.

It is a cache, not a store: Qdrant stays the record. `VectorStore` builds it from a scroll
of the collection on the first search and keeps it in step on every write it makes (local
mode holds an exclusive lock on its folder, so no other process writes behind its back);
any write that fails half-way throws the cache away and the next search rebuilds it.

Not thread-safe on its own: the store calls it under the local client's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]
_Array = TypeVar("_Array", bound=npt.NDArray[Any])
NO_VALUE = -1  # code of an unset assistant (global chunk)
_MIN_CAPACITY = 1024


@dataclass(frozen=True)
class IndexedPoint:
    """What the index needs of one point: its id, unit-normalisable vector, filter fields."""

    point_id: str
    vector: Sequence[float]
    lang: str
    document_id: int
    assistant: str | None
    chat_id: int | None


class DenseIndex:
    """Unit vectors and filter columns in growable numpy arrays; deletions leave holes that
    are compacted once they make up half of the rows."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors: FloatMatrix = np.zeros((0, dim), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._lang = np.zeros(0, dtype=np.int32)
        self._assistant = np.zeros(0, dtype=np.int32)
        self._chat = np.zeros(0, dtype=np.int64)
        self._has_chat = np.zeros(0, dtype=bool)
        self._document = np.zeros(0, dtype=np.int64)
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._rows = 0
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    # ------------------------------------------------------------------ writing

    def add(self, points: Iterable[IndexedPoint]) -> None:
        """Insert or replace points (same id = replaced)."""
        batch = list(points)
        if not batch:
            return
        for point in batch:
            old = self._row_of.pop(point.point_id, None)
            if old is not None:
                self._alive[old] = False
        matrix = np.asarray([p.vector for p in batch], dtype=np.float32).reshape(len(batch), -1)
        if matrix.shape[1] != self.dim:
            raise ValueError(f"vectors have {matrix.shape[1]} dimensions, the index {self.dim}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._reserve(self._rows + len(batch))
        rows = slice(self._rows, self._rows + len(batch))
        self._vectors[rows] = matrix / norms
        self._alive[rows] = True
        self._lang[rows] = [self._code(p.lang) for p in batch]
        self._assistant[rows] = [
            NO_VALUE if p.assistant is None else self._code(p.assistant) for p in batch
        ]
        self._has_chat[rows] = [p.chat_id is not None for p in batch]
        self._chat[rows] = [0 if p.chat_id is None else p.chat_id for p in batch]
        self._document[rows] = [p.document_id for p in batch]
        for offset, point in enumerate(batch):
            self._row_of[point.point_id] = self._rows + offset
            self._ids.append(point.point_id)
        self._rows += len(batch)

    def remove(self, point_ids: Iterable[str]) -> None:
        for point_id in point_ids:
            row = self._row_of.pop(point_id, None)
            if row is not None:
                self._alive[row] = False
        self._maybe_compact()

    def remove_document(self, document_id: int) -> None:
        rows = np.flatnonzero(
            self._alive[: self._rows] & (self._document[: self._rows] == document_id)
        )
        self.remove([self._ids[row] for row in rows])

    # ------------------------------------------------------------------ reading

    def search_per_language(
        self,
        query: Sequence[float],
        *,
        langs: Sequence[str],
        limit: int,
        assistant: str | None = None,
        chat_id: int | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        """Each language's best `limit` (point id, cosine), best first, among the points in
        scope: a field that is given matches points where it is unset (global) or equal."""
        q = np.asarray(query, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        if q.shape != (self.dim,) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("the query must be a finite, non-zero vector of the index's size")
        n = self._rows
        scope = self._alive[:n].copy()
        if assistant is not None:
            code = self._codes.get(assistant)
            own = self._assistant[:n] == code if code is not None else False
            scope &= (self._assistant[:n] == NO_VALUE) | own
        if chat_id is not None:
            scope &= ~self._has_chat[:n] | (self._chat[:n] == chat_id)
        scores = self._vectors[:n] @ (q / norm) if n else np.zeros(0, dtype=np.float32)
        out: dict[str, list[tuple[str, float]]] = {}
        for lang in langs:
            code = self._codes.get(lang)
            if code is None:
                out[lang] = []
                continue
            rows = np.flatnonzero(scope & (self._lang[:n] == code))
            out[lang] = self._top(rows, scores, limit)
        return out

    def _top(
        self, rows: npt.NDArray[np.intp], scores: FloatMatrix, limit: int
    ) -> list[tuple[str, float]]:
        if rows.size == 0:
            return []
        candidate = scores[rows]
        k = min(limit, rows.size)
        best = np.argpartition(-candidate, k - 1)[:k] if k < rows.size else np.arange(rows.size)
        best = best[np.argsort(-candidate[best], kind="stable")]
        return [(self._ids[rows[i]], float(candidate[i])) for i in best]

    # ------------------------------------------------------------------ storage

    def _code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def _reserve(self, rows: int) -> None:
        capacity = self._vectors.shape[0]
        if rows <= capacity:
            return
        new = max(rows, capacity * 2, _MIN_CAPACITY)
        self._vectors = _grow(self._vectors, new)
        self._alive = _grow(self._alive, new)
        self._lang = _grow(self._lang, new)
        self._assistant = _grow(self._assistant, new)
        self._chat = _grow(self._chat, new)
        self._has_chat = _grow(self._has_chat, new)
        self._document = _grow(self._document, new)

    def _maybe_compact(self) -> None:
        """Drop deleted rows once they are half of the used ones (keeps searches linear in
        the live points, and memory bounded under churn)."""
        dead = self._rows - len(self._row_of)
        if dead < _MIN_CAPACITY or dead * 2 < self._rows:
            return
        keep = np.flatnonzero(self._alive[: self._rows])
        for name in (
            "_vectors",
            "_alive",
            "_lang",
            "_assistant",
            "_chat",
            "_has_chat",
            "_document",
        ):
            column = getattr(self, name)
            setattr(self, name, column[keep].copy())
        self._ids = [self._ids[row] for row in keep]
        self._row_of = {point_id: row for row, point_id in enumerate(self._ids)}
        self._rows = len(self._ids)


def _grow(array: _Array, rows: int) -> _Array:
    grown = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    grown[: array.shape[0]] = array
    return cast(_Array, grown)
