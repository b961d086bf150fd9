"""From answers to verdicts: each assistant's per-item records and set metrics.

Blocking (embeddings): call it from async code through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from loopgram.assistants import get_assistant
from loopgram.embeddings import Embedder
from loopgram.evaluation import metrics as m
from loopgram.evaluation.results import Answer, ItemRecord
from loopgram.evaluation.sets import EvalItem, labels_of

log = logging.getLogger(__name__)

CALIBRATED_EMBEDDER = "e5-small"

Scored = tuple[list[ItemRecord], dict[str, float]]


def expected_language(assistant: str, item: EvalItem) -> str:
    """The language the answer must be in, as the assistant itself decides it."""
    helper = get_assistant(assistant)
    options = helper.options(item.options)
    return helper.answer_language(lang=item.lang, text=item.text, options=options)


def score(
    assistant: str,
    items: Sequence[EvalItem],
    answers: Sequence[Answer],
    *,
    embedder: Embedder,
    low_confidence: float,
    max_rewrite_length: float = m.MAX_REWRITE_LENGTH,
) -> Scored:
    if len(items) != len(answers):
        raise ValueError("one answer per item is needed")
    if assistant in ("paraphrase", "summarize") and embedder.name != CALIBRATED_EMBEDDER:
        log.warning(
            "evaluation.uncalibrated_embedder embedder=%s calibrated_for=%s",
            embedder.name,
            CALIBRATED_EMBEDDER,
        )
    if assistant == "paraphrase":
        return score_paraphrase(items, answers, embedder, max_length_ratio=max_rewrite_length)
    if assistant == "summarize":
        return score_summaries(items, answers, embedder)
    if assistant == "moderate":
        return score_moderation(items, answers)
    if assistant == "label":
        return score_labels(items, answers, low_confidence=low_confidence)
    raise ValueError(f"no scoring for {assistant!r}")


def score_paraphrase(
    items: Sequence[EvalItem],
    answers: Sequence[Answer],
    embedder: Embedder,
    *,
    max_length_ratio: float = m.MAX_REWRITE_LENGTH,
) -> Scored:
    outputs = [answer.output.strip() for answer in answers]
    similarities = m.pair_similarities(embedder, [item.text for item in items], outputs)
    records, scores = [], []
    for item, output, similarity in zip(items, outputs, similarities, strict=True):
        target = expected_language("paraphrase", item)
        result = m.score_paraphrase(
            item.text,
            output,
            expected_lang=target,
            similarity=similarity,
            max_length_ratio=max_length_ratio,
        )
        scores.append(result)
        records.append(
            ItemRecord(
                id=item.id,
                lang=item.lang,
                input=item.text,
                output=output,
                expected=target,
                ok=result.ok,
                details={
                    "options": item.options,
                    "similarity": round(result.similarity, 4),
                    "meaning_kept": result.kept,
                    "copy": result.copy,
                    "length_ratio": round(result.length_ratio, 3),
                    "max_length_ratio": result.max_length_ratio,
                    "language_ok": result.language_ok,
                },
            )
        )
    return records, m.paraphrase_metrics(scores)


def score_summaries(
    items: Sequence[EvalItem], answers: Sequence[Answer], embedder: Embedder
) -> Scored:
    records, scores = [], []
    for item, answer in zip(items, answers, strict=True):
        summary = answer.output.strip()
        points = list(item.key_points)
        covered = m.covered_points(points, summary, m.point_similarities(embedder, points, summary))
        result = m.SummaryScore(
            covered=tuple(covered),
            compression=m.compression_ratio(item.text, summary),
            language_ok=m.language_correct(summary, expected_language("summarize", item)),
        )
        scores.append(result)
        records.append(
            ItemRecord(
                id=item.id,
                lang=item.lang,
                input=item.text,
                output=summary,
                expected=points,
                ok=result.ok,
                details={
                    "covered": [p for p, hit in zip(points, covered, strict=True) if hit],
                    "coverage": round(result.coverage, 4),
                    "compression": round(result.compression, 3),
                    "language_ok": result.language_ok,
                },
            )
        )
    return records, m.summarize_metrics(scores)


def _label_records(items: Sequence[EvalItem], answers: Sequence[Answer]) -> list[ItemRecord]:
    return [
        ItemRecord(
            id=item.id,
            lang=item.lang,
            input=item.text,
            output=answer.output,
            expected=item.label,
            ok=not answer.invalid and answer.label == item.label,
            details={
                "predicted": answer.label,
                "confidence": answer.confidence,
                "attempts": answer.attempts,
                "invalid": answer.invalid,
            },
        )
        for item, answer in zip(items, answers, strict=True)
    ]


def _gold(items: Sequence[EvalItem]) -> list[str]:
    return [item.label or "" for item in items]


def _predicted(answers: Sequence[Answer]) -> list[str | None]:
    return [None if answer.invalid else answer.label for answer in answers]


def score_moderation(items: Sequence[EvalItem], answers: Sequence[Answer]) -> Scored:
    metrics = m.moderation_metrics(
        _gold(items),
        _predicted(answers),
        labels=labels_of("moderate"),
        repaired=[answer.repaired for answer in answers],
    )
    return _label_records(items, answers), metrics


def score_labels(
    items: Sequence[EvalItem], answers: Sequence[Answer], *, low_confidence: float
) -> Scored:
    metrics = m.labeling_metrics(
        _gold(items),
        _predicted(answers),
        confidences=[None if answer.invalid else answer.confidence for answer in answers],
        low_confidence=low_confidence,
        repaired=[answer.repaired for answer in answers],
    )
    records = _label_records(items, answers)
    return records, metrics
