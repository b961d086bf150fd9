"""The shapes that pass between the knowledge base's parts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkDraft:
    """A piece of a document, before it is embedded and stored."""

    text: str
    index: int  # position in the document, from 0
    lang: str  # "ru" or "en"
    section: str | None = None  # the nearest heading above it
    page: int | None = None  # PDF page (1-based)
    tokens: int = 0  # estimated tokens (see chunking.estimate_tokens)


@dataclass(frozen=True)
class SparseVector:
    """A BM25-style sparse vector: term ids (hashed) and weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as stored: its vectors and the payload used for filters and citations."""

    chunk_id: str  # a UUID string (Qdrant point id)
    document_id: int
    document: str  # the document's name, for citations
    text: str
    lang: str
    dense: list[float]
    sparse: SparseVector
    section: str | None = None
    page: int | None = None
    assistant: str | None = None  # scope: None = every assistant
    chat_id: int | None = None  # scope: None = every chat
    archived: bool = False  # the document declares itself archived (see rag.rerank)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk, best first in a result list."""

    chunk_id: str
    document_id: int
    document: str
    text: str
    score: float
    lang: str
    section: str | None = None
    page: int | None = None
    scores: dict[str, float] = field(default_factory=dict)  # per stage: dense, sparse, rerank
    archived: bool = False


@dataclass(frozen=True)
class Retrieval:
    """What an answer is grounded on."""

    hits: list[Hit] = field(default_factory=list)
    available: bool = True  # False: the knowledge base could not be reached
    searched: bool = False  # False: nothing in this chat's scope to search
