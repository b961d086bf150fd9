"""The rerank stage (`loopgram.rag.rerank`): which documents count as archived, how their
chunks are moved, and that the flag travels from ingest to the prompt."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from loopgram.rag.prompt import sources_block
from loopgram.rag.rerank import ARCHIVED_PENALTY, is_superseded, rerank
from loopgram.rag.store import VectorStore
from loopgram.rag.types import ChunkRecord, Hit, SparseVector

CORPUS = Path(__file__).resolve().parents[2] / "loopgram" / "rag" / "eval" / "corpus"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("policy.md", "# Refund Policy 2023 (ARCHIVED)\n\nItems could be returned..."),
        ("policy.md", "# Политика отпусков 2022 (АРХИВ)\n\nСотрудники получали..."),
        ("policy-archived.md", "# Refund policy\n\nItems could be returned within 14 days."),
        ("otpusk-2022-arhiv.md", "# Отпуск\n\nСотрудники получали 28 дней."),
        ("notes.txt", "Pricing\n\nThis page was replaced by the 2025 price list on 1 May."),
        ("notes.txt", "Tariffs\n\nThis document is no longer valid and is kept for reference."),
        ("doc.docx", "Регламент\n\nАрхивный документ. Хранится только для справки."),
        ("doc.docx", "Регламент\n\nС 1 января заменён новым регламентом."),
        ("doc.docx", "Регламент\n\nДокумент утратил силу 1 марта 2024 года."),
    ],
)
def test_documents_that_declare_themselves_archived(name: str, text: str) -> None:
    assert is_superseded(name, text)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # the current versions mention the archive; that does not make them archived
        (
            "refund-policy-2025.md",
            "# Refund Policy (current, effective 1 March 2025)\n\nIt replaces the 2023 refund"
            " policy, which is kept in the archive for reference only.",
        ),
        (
            "otpusk-2025.md",
            "# Политика отпусков (действует с 1 января 2025 года)\n\nЭта политика заменяет"
            " политику отпусков 2022 года, которая перенесена в архив.",
        ),
        ("old-town-office.md", "# Old Town office\n\nOpening hours are 9 to 18."),
        ("archive-howto.md".replace("archive", "backup"), "# How to archive mail\n\nText."),
        ("shipping.md", "# Shipping\n\n" + "filler " * 200 + "This page was replaced by X."),
    ],
)
def test_current_documents_are_not_archived(name: str, text: str) -> None:
    assert not is_superseded(name, text)


def test_the_shipped_corpus_flags_exactly_the_two_archived_policies() -> None:
    flagged = {p.name for p in CORPUS.iterdir() if is_superseded(p.name, p.read_text())}
    assert flagged == {"refund-policy-2023-archived.md", "otpusk-2022-arhiv.md"}
    # and by their text alone, without the telling file names
    for name in flagged:
        assert is_superseded("document.md", (CORPUS / name).read_text())


def _hit(n: int, score: float, *, archived: bool = False) -> Hit:
    return Hit(
        chunk_id=str(n), document_id=n, document=f"d{n}", text="t", score=score, lang="en",
        archived=archived,
    )  # fmt: skip


def test_rerank_lowers_archived_chunks_by_the_penalty_only() -> None:
    hits = [_hit(1, 0.85, archived=True), _hit(2, 0.84), _hit(3, 0.70)]
    out = rerank(hits)
    assert [h.chunk_id for h in out] == ["2", "1", "3"]
    assert out[1].score == pytest.approx(0.85 - ARCHIVED_PENALTY)
    assert all(h.scores["rerank"] == h.score for h in out)
    # an archived chunk far ahead of the rest stays ahead: it is still found
    assert rerank([_hit(1, 0.90, archived=True), _hit(2, 0.70)])[0].chunk_id == "1"


def test_the_flag_goes_from_the_record_to_the_hit_and_the_prompt(tmp_path: Path) -> None:
    def record(n: int, archived: bool) -> ChunkRecord:
        return ChunkRecord(
            chunk_id=str(uuid.UUID(int=n)), document_id=n, document=f"policy-{n}.md",
            text=f"policy {n}", lang="en", dense=[1.0, 0.1 * n, 0.0, 0.0],
            sparse=SparseVector(indices=[], values=[]), archived=archived,
        )  # fmt: skip

    with VectorStore(path=tmp_path / "q", collection="flags", dim=4) as store:
        store.upsert([record(1, True), record(2, False)])
        hits = store.search_per_language([1.0, 0.0, 0.0, 0.0], limit=5)["en"]
    flags = {h.document: h.archived for h in hits}
    assert flags == {"policy-1.md": True, "policy-2.md": False}
    block = sources_block(sorted(hits, key=lambda h: h.document))
    assert '<source id="1" title="policy-1.md" status="archived">' in block
    assert '<source id="2" title="policy-2.md">' in block
