"""The satisfaction estimate's math: Platt scaling, Brier score, calibration error, the
out-of-sample split, and when there are too few ratings to give a figure."""

from __future__ import annotations

import numpy as np
import pytest

from loopgram.satisfaction import (
    MIN_RATED,
    Observation,
    brier_score,
    calibration_bins,
    estimate,
    expected_calibration_error,
    fit_platt,
    out_of_fold,
    sigmoid,
)


def synthetic(n: int, a: float, b: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.5, 2.0, n)
    labels = (rng.random(n) < sigmoid(a * scores + b)).astype(float)
    return scores, labels


def test_platt_fit_recovers_the_slope_and_intercept_that_made_the_data() -> None:
    scores, labels = synthetic(40_000, a=1.5, b=-0.7)
    fit = fit_platt(scores, labels)
    assert fit.a == pytest.approx(1.5, abs=0.06)
    assert fit.b == pytest.approx(-0.7, abs=0.06)
    # The same on another scale and offset: the fit follows the reward model's scale.
    scaled = fit_platt(scores * 10 + 3, labels)
    assert scaled.a == pytest.approx(0.15, abs=0.006)
    assert scaled.predict([13.0])[0] == pytest.approx(fit.predict([1.0])[0], abs=1e-6)


def test_a_negative_slope_is_found_too() -> None:
    scores, labels = synthetic(20_000, a=-0.8, b=0.4, seed=3)
    fit = fit_platt(scores, labels)
    assert fit.a == pytest.approx(-0.8, abs=0.05) and fit.b == pytest.approx(0.4, abs=0.05)


def test_the_prior_keeps_a_separable_small_sample_finite_and_sane() -> None:
    # Every 👍 scores above every 👎: without a prior the slope would run to infinity.
    scores = np.array([-3.0, -2.0, -1.5, -1.0, 1.0, 1.5, 2.0, 3.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    fit = fit_platt(scores, labels)
    assert 0 < fit.a < 5 and abs(fit.b) < 1
    p = fit.predict(scores)
    assert np.all((p > 0.02) & (p < 0.98)), "a handful of ratings gives no certainty"
    assert np.all(np.diff(p) > 0)


def test_equal_scores_learn_only_the_base_rate() -> None:
    fit = fit_platt(np.full(50, 2.0), np.array([1.0] * 40 + [0.0] * 10))
    assert fit.predict([2.0])[0] == pytest.approx(0.8, abs=0.02)


def test_bad_input_to_the_fit_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_platt([], [])
    with pytest.raises(ValueError, match="as many labels"):
        fit_platt([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="finite"):
        fit_platt([1.0, float("nan")], [1, 0])


def test_brier_and_ece_are_zero_for_perfect_predictions_and_large_for_bad_ones() -> None:
    labels = np.array([1.0, 0.0] * 50)
    assert brier_score(labels, labels) == 0.0
    assert expected_calibration_error(labels, labels) == 0.0
    backwards = 1 - labels
    assert brier_score(backwards, labels) == 1.0
    assert expected_calibration_error(backwards, labels) == pytest.approx(1.0)
    # Always 0.5 on a 50 % outcome: calibrated (ECE 0), but uninformative (Brier 0.25).
    half = np.full(100, 0.5)
    assert expected_calibration_error(half, labels) == pytest.approx(0.0)
    assert brier_score(half, labels) == pytest.approx(0.25)
    # Overconfident: says 0.9 where 60 % come true.
    rng = np.random.default_rng(0)
    outcome = (rng.random(2000) < 0.6).astype(float)
    assert expected_calibration_error(np.full(2000, 0.9), outcome) == pytest.approx(0.3, abs=0.03)


def test_probabilities_drawn_from_themselves_are_well_calibrated() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    bins = calibration_bins(p, y, bins=10)
    assert [round(b.bin_low, 1) for b in bins] == [i / 10 for i in range(10)]
    assert sum(b.count for b in bins) == 50_000
    assert all(abs((b.predicted or 0) - (b.observed or 0)) < 0.02 for b in bins)
    # The top bin holds 1.0 itself; an empty bin says so rather than inventing a number.
    edge = calibration_bins(np.array([1.0, 0.05]), np.array([1.0, 0.0]), bins=5)
    assert edge[-1].count == 1 and edge[0].count == 1
    assert edge[2].count == 0 and edge[2].predicted is None and edge[2].observed is None


def test_out_of_fold_predictions_never_come_from_a_fit_that_saw_them() -> None:
    scores, labels = synthetic(400, a=1.0, b=0.0, seed=9)
    groups = [i // 2 for i in range(400)]  # two ratings per answer: kept in one fold
    held_out = out_of_fold(scores, labels, groups)
    # Flip the labels of one answer: its own predictions must not move (its fit never saw
    # them), while the fits that did see them (the other folds) change.
    flipped = labels.copy()
    flipped[10:12] = 1 - flipped[10:12]
    again = out_of_fold(scores, flipped, groups)
    assert np.array_equal(again[10:12], held_out[10:12])
    assert not np.allclose(again, held_out)
    # Honest figures are no better than the in-sample ones, and still far better than a coin.
    in_sample = fit_platt(scores, labels).predict(scores)
    assert brier_score(held_out, labels) >= brier_score(in_sample, labels) - 1e-9
    assert brier_score(held_out, labels) < 0.25
    # The folds are fixed: the same data gives the same figures.
    assert np.array_equal(held_out, out_of_fold(scores, labels, groups))


def _answers(scores: np.ndarray, labels: np.ndarray, *, adapter: str = "base") -> list[Observation]:
    return [
        Observation(i, adapter, float(s), (1 if y else -1,))
        for i, (s, y) in enumerate(zip(scores, labels, strict=True))
    ]


def test_too_few_ratings_or_one_kind_only_gives_no_figure_but_says_why() -> None:
    scores, labels = synthetic(MIN_RATED - 1, a=2.0, b=0.0)
    few = estimate("chat", "chat-rm-v1", _answers(scores, labels))
    assert not few.calibrated and few.brier is None and few.calibration == []
    assert few.note is not None and "not enough ratings to calibrate" in few.note
    assert few.adapters["base"].predicted is None
    assert few.adapters["base"].answers == MIN_RATED - 1
    assert few.adapters["base"].observed == pytest.approx(labels.mean())

    only_up = estimate("chat", "chat-rm-v1", _answers(np.arange(30.0), np.ones(30)))
    assert not only_up.calibrated and "both" in (only_up.note or "")

    unrated = [Observation(i, "base", float(i)) for i in range(100)]
    none = estimate("chat", "chat-rm-v1", unrated)
    assert not none.calibrated and none.rated == 0 and none.adapters["base"].observed is None


def test_predicted_rate_covers_every_answer_rated_or_not_per_adapter() -> None:
    rng = np.random.default_rng(7)
    # Adapter "good" answers score higher than "base"; only a tenth of answers are rated.
    answers = []
    truth: dict[str, list[float]] = {"base": [], "good": []}  # each answer's true P(👍)
    for i in range(3000):
        adapter = "good" if i % 2 else "base"
        score = rng.normal(1.0 if adapter == "good" else -1.0, 1.0)
        p = float(sigmoid(np.array(1.2 * score - 0.2)))
        truth[adapter].append(p)
        rated = (1 if rng.random() < p else -1,) if i % 10 < 2 else ()
        answers.append(Observation(i, adapter, score, rated))
    result = estimate("chat", "chat-rm-v1", answers)
    assert result.calibrated and result.rated == 600
    for adapter in ("base", "good"):
        figures = result.adapters[adapter]
        assert figures.answers == 1500 and figures.rated == 300
        assert figures.predicted == pytest.approx(np.mean(truth[adapter]), abs=0.03)
        assert figures.observed == pytest.approx(np.mean(truth[adapter]), abs=0.06)
    good, base = result.adapters["good"].predicted, result.adapters["base"].predicted
    assert good is not None and base is not None and good > base + 0.3
    assert result.ece is not None and result.ece < 0.06
    assert result.brier is not None and 0.1 < result.brier < 0.25
    assert sum(b.count for b in result.calibration) == 600
    document = result.as_dict()
    assert set(document) >= {"reward_model", "adapters", "brier", "ece", "calibration"}
    assert set(document["adapters"]["good"]) == {"predicted", "answers", "observed", "rated"}
    assert set(document["calibration"][0]) == {
        "bin_low",
        "bin_high",
        "predicted",
        "observed",
        "count",
    }
