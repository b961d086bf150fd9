"""Evaluation metrics: pure functions of the answers, the references and (for meaning)
embedding similarities.

Thresholds are calibrated for multilingual-e5-small (`loopgram.embeddings`, "e5-small"),
whose cosine similarities bunch up high: unrelated sentences still score ~0.71-0.84.

- `MEANING_KEPT = 0.88` (source vs rewrite, passage vs passage). Calibrated on the
  paraphrase set: 14 hand-written good rewrites and translations scored 0.869-0.990
  (median 0.966; 13 of 14 >= 0.88, the miss a very terse "concise" rewrite); 6 rewrites
  that change a fact scored 0.823-0.886 (2 >= 0.88); other items of the set paired with
  each other at most 0.841 (median 0.783); generic replies ("Here is the rewritten text.")
  at most 0.882 (median 0.76, 1% >= 0.88).
- `KEY_POINT_COVERED = 0.87` (key point as a query vs summary sentences as passages, the
  best sentence counts). Calibrated on the summarize set: a key point against the
  sentences of its own text scored >= 0.87 for 96% of the 67 points (minimum 0.836);
  against the sentences of the other texts in its language 1% (maximum 0.871); against
  the other key points of its own text (a summary that omits it) 6%.
  The word rule (`KEY_POINT_WORDS`) catches covered points that embeddings miss.

Classification metrics treat an invalid answer (None) as a wrong answer: it is a false
negative for its gold label, and it is its own category in Cohen's kappa.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loopgram.assistants import text_language
from loopgram.assistants.checks import COPY_RATIO, MEANING_KEPT, copy_ratio
from loopgram.embeddings import Embedder

KEY_POINT_COVERED = 0.87
KEY_POINT_WORDS = 0.6  # share of a key point's content words found in the summary
# An "ok" verdict also needs a plausible length: a rewrite over twice its source's length
# has added something (small models append refusals and comments whose embedding still
# scores near the source), and a summary with over 70% of its text's words is the text.
# MAX_REWRITE_LENGTH is the default bound; a deployment whose people want rewrites no longer
# than the source sets its own (`task_max_rewrite_length` in TRAIN_CONFIG, which the gate's
# task check and `loopgram eval` both judge by).
MAX_REWRITE_LENGTH = 2.0
MAX_SUMMARY_COMPRESSION = 0.7
MIN_WORD = 4  # content words have at least this many letters (numbers always count)
STEM = 5  # crude stemming: the first five characters
INVALID = "<invalid>"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…;])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•–—]|\d+[.)])\s*")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
# Function words long enough to pass MIN_WORD; they carry no content of a key point.
_STOP_WORDS = """
that this these those with from will would could should have been were they them their
there then than into onto over under about after before because while which what when
where also only very more most some such just even each both other another
который которая которые которое этот этого этой также чтобы когда если после перед более
будет будут было были быть может только очень через между всех всего свой своей свои того
тоже потому однако
"""
_STOP = frozenset(_STOP_WORDS.split())

FloatMatrix = npt.NDArray[np.float32]


# ----------------------------------------------------------------------------- shared


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def share(flags: Sequence[bool]) -> float:
    return mean([1.0 if flag else 0.0 for flag in flags])


def word_count(text: str) -> int:
    return len(text.split())


def language_correct(output: str, expected: str) -> bool:
    """The output is written in the expected language (Cyrillic vs Latin letters); an
    output without letters is never correct."""
    if not _LETTER.search(output):
        return False
    return text_language(output, default=expected) == expected


def pair_similarities(embedder: Embedder, left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity of left[i] and right[i], both embedded as passages."""
    if len(left) != len(right):
        raise ValueError("left and right differ in length")
    if not left:
        return []
    a = embedder.embed_passages(list(left))
    b = embedder.embed_passages(list(right))
    return [float(x) for x in np.clip(np.sum(a * b, axis=1), -1.0, 1.0)]


# ---------------------------------------------------------------------------- paraphrase


def is_copy(source: str, output: str) -> bool:
    return copy_ratio(source, output) >= COPY_RATIO


def length_ratio(source: str, output: str) -> float:
    """Characters of the output per character of the source (stripped)."""
    length = len(source.strip())
    return len(output.strip()) / length if length else 0.0


@dataclass(frozen=True)
class ParaphraseScore:
    similarity: float
    copy: bool
    length_ratio: float
    language_ok: bool
    max_length_ratio: float = MAX_REWRITE_LENGTH

    @property
    def kept(self) -> bool:
        return self.similarity >= MEANING_KEPT

    @property
    def length_ok(self) -> bool:
        return self.length_ratio <= self.max_length_ratio

    @property
    def ok(self) -> bool:
        """A good rewrite: meaning kept, in the right language, not a copy, and at most
        `max_length_ratio` times as long as the source."""
        return self.kept and self.language_ok and not self.copy and self.length_ok


def check_rewrite_length(value: float) -> float:
    """A length bound must leave room for a rewrite: below half the source's length only
    drastic cuts would pass."""
    if not 0.5 <= value <= 10:
        raise ValueError(f"the rewrite length bound must be between 0.5 and 10, not {value}")
    return value


def score_paraphrase(
    source: str,
    output: str,
    *,
    expected_lang: str,
    similarity: float,
    max_length_ratio: float = MAX_REWRITE_LENGTH,
) -> ParaphraseScore:
    """One rewrite; an empty rewrite keeps no meaning whatever its embedding says."""
    return ParaphraseScore(
        similarity=similarity if output.strip() else 0.0,
        copy=is_copy(source, output),
        length_ratio=length_ratio(source, output),
        language_ok=language_correct(output, expected_lang),
        max_length_ratio=check_rewrite_length(max_length_ratio),
    )


def paraphrase_metrics(scores: Sequence[ParaphraseScore]) -> dict[str, float]:
    return {
        "meaning_similarity": mean([s.similarity for s in scores]),
        "meaning_kept_rate": share([s.kept for s in scores]),
        "copy_rate": share([s.copy for s in scores]),
        "length_ratio": mean([s.length_ratio for s in scores]),
        "length_ok_rate": share([s.length_ok for s in scores]),
        "language_correct_rate": share([s.language_ok for s in scores]),
        "ok_rate": share([s.ok for s in scores]),
    }


# ----------------------------------------------------------------------------- summarize


def content_stems(text: str) -> set[str]:
    """Lowercased words of >= 4 letters (numbers of any length), not function words, cut to
    their first five characters: a crude stemmer that works for English and Russian."""
    stems = set()
    for word in _WORD.findall(text.lower().replace("ё", "е")):
        if word.isdigit() or (len(word) >= MIN_WORD and word not in _STOP):
            stems.add(word[:STEM])
    return stems


def word_overlap(point: str, summary: str) -> float:
    """Share of the key point's content words that appear in the summary (1.0 if none)."""
    wanted = content_stems(point)
    if not wanted:
        return 1.0
    return len(wanted & content_stems(summary)) / len(wanted)


def summary_sentences(summary: str) -> list[str]:
    """The summary cut into sentences (and bullet points, and clauses after ';')."""
    pieces = (_BULLET.sub("", piece).strip() for piece in _SENTENCE_END.split(summary))
    return [piece for piece in pieces if piece]


def covered_points(points: Sequence[str], summary: str, similarity: npt.ArrayLike) -> list[bool]:
    """Which key points the summary covers. `similarity[i, j]` is point i against summary
    sentence j. A point is covered when its best sentence reaches KEY_POINT_COVERED or
    when KEY_POINT_WORDS of its content words are in the summary."""
    matrix = np.asarray(similarity, dtype=np.float64)
    if matrix.size == 0:
        best = np.zeros(len(points))
    else:
        matrix = matrix.reshape(len(points), -1)
        best = matrix.max(axis=1)
    return [
        bool(best[i] >= KEY_POINT_COVERED) or word_overlap(point, summary) >= KEY_POINT_WORDS
        for i, point in enumerate(points)
    ]


def point_similarities(embedder: Embedder, points: Sequence[str], summary: str) -> FloatMatrix:
    """Key points (as queries) against the summary's sentences (as passages)."""
    sentences = summary_sentences(summary)
    if not points or not sentences:
        return np.zeros((len(points), 0), dtype=np.float32)
    q = embedder.embed_queries(list(points))
    p = embedder.embed_passages(sentences)
    similarity: FloatMatrix = np.clip(q @ p.T, -1.0, 1.0).astype(np.float32)
    return similarity


def compression_ratio(text: str, summary: str) -> float:
    """Words of the summary per word of the text."""
    words = word_count(text)
    return word_count(summary) / words if words else 0.0


@dataclass(frozen=True)
class SummaryScore:
    covered: tuple[bool, ...]
    compression: float
    language_ok: bool

    @property
    def coverage(self) -> float:
        return share(self.covered)

    @property
    def ok(self) -> bool:
        """At least half the key points, in the text's language, and shorter than the text
        (at most MAX_SUMMARY_COMPRESSION of its words)."""
        return (
            self.coverage >= 0.5
            and self.language_ok
            and self.compression <= MAX_SUMMARY_COMPRESSION
        )


def summarize_metrics(scores: Sequence[SummaryScore]) -> dict[str, float]:
    return {
        "key_point_coverage": mean([s.coverage for s in scores]),
        "compression_ratio": mean([s.compression for s in scores]),
        "language_correct_rate": share([s.language_ok for s in scores]),
        "ok_rate": share([s.ok for s in scores]),
    }


# ------------------------------------------------------------------------ classification

Prediction = str | None  # None: no valid answer after the repair turn


def accuracy(gold: Sequence[str], predicted: Sequence[Prediction]) -> float:
    _same_length(gold, predicted)
    return share([g == p for g, p in zip(gold, predicted, strict=True)])


def precision_recall_f1(
    gold: Sequence[str], predicted: Sequence[Prediction], label: str
) -> tuple[float, float, float]:
    """Of one label; 0.0 where a ratio has nothing to divide by."""
    _same_length(gold, predicted)
    pairs = list(zip(gold, predicted, strict=True))
    tp = sum(1 for g, p in pairs if g == label and p == label)
    fp = sum(1 for g, p in pairs if g != label and p == label)
    fn = sum(1 for g, p in pairs if g == label and p != label)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def macro_f1(
    gold: Sequence[str], predicted: Sequence[Prediction], labels: Sequence[str] | None = None
) -> float:
    """Mean F1 over `labels`, by default the labels that occur in gold or in predictions
    (as scikit-learn does); invalid answers are not a label."""
    if labels is None:
        labels = sorted({*gold, *(p for p in predicted if p is not None)})
    return mean([precision_recall_f1(gold, predicted, label)[2] for label in labels])


def cohen_kappa(gold: Sequence[str], predicted: Sequence[Prediction]) -> float:
    """Agreement beyond chance: (p_o - p_e) / (1 - p_e), with p_e from the two marginal
    label distributions. Invalid answers are a category of their own. When chance
    agreement is already total (one category on both sides), 1.0 if they agree, else 0.0."""
    _same_length(gold, predicted)
    n = len(gold)
    if n == 0:
        return 0.0
    answers = [INVALID if p is None else p for p in predicted]
    observed = sum(1 for g, p in zip(gold, answers, strict=True) if g == p) / n
    gold_counts, answer_counts = Counter(gold), Counter(answers)
    expected = sum(gold_counts[k] * answer_counts[k] for k in gold_counts) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def moderation_metrics(
    gold: Sequence[str],
    predicted: Sequence[Prediction],
    *,
    labels: Sequence[str],
    repaired: Sequence[bool],
) -> dict[str, float]:
    """Accuracy, macro-F1 over the labels present, per-label precision/recall/F1, the share
    of invalid answers (after the repair turn) and of answers the repair turn fixed."""
    metrics = {
        "accuracy": accuracy(gold, predicted),
        "macro_f1": macro_f1(gold, predicted),
        "invalid_rate": share([p is None for p in predicted]),
        "repaired_rate": share(repaired),
    }
    for label in labels:
        precision, recall, f1 = precision_recall_f1(gold, predicted, label)
        metrics[f"precision_{label}"] = precision
        metrics[f"recall_{label}"] = recall
        metrics[f"f1_{label}"] = f1
    return metrics


def labeling_metrics(
    gold: Sequence[str],
    predicted: Sequence[Prediction],
    *,
    confidences: Sequence[float | None],
    low_confidence: float,
    repaired: Sequence[bool],
) -> dict[str, float]:
    """Accuracy, Cohen's kappa and macro-F1 against gold; invalid and repaired shares; the
    share that would go to a human (confidence below `low_confidence`, or no valid answer)
    and the accuracy on the rest (`confident_accuracy`, absent when no item is left)."""
    _same_length(gold, confidences)
    needs_human = [
        p is None or c is None or c < low_confidence
        for p, c in zip(predicted, confidences, strict=True)
    ]
    metrics = {
        "accuracy": accuracy(gold, predicted),
        "kappa": cohen_kappa(gold, predicted),
        "macro_f1": macro_f1(gold, predicted),
        "invalid_rate": share([p is None for p in predicted]),
        "repaired_rate": share(repaired),
        "needs_human_rate": share(needs_human),
    }
    confident = [
        (g, p) for g, p, human in zip(gold, predicted, needs_human, strict=True) if not human
    ]
    if confident:
        metrics["confident_accuracy"] = accuracy(
            [g for g, _ in confident], [p for _, p in confident]
        )
    return metrics


def _same_length(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"sequences differ in length: {len(a)} and {len(b)}")
