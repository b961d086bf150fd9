"""Scripted answers for the evaluation sets: the gold label of the item being asked."""

from __future__ import annotations

import json

from loopgram.evaluation.sets import load_set
from tests.label_model import is_repair, item_of
from training.model_server.protocol import GenerationRequest

GOLD = {
    item.text: item.label or ""
    for assistant in ("moderate", "label")
    for item in load_set(assistant).items
}
GARBAGE = "Sure! This message looks fine to me."

__all__ = ["GARBAGE", "GOLD", "gold_of", "is_repair", "label_json", "verdict_json"]


def gold_of(request: GenerationRequest) -> str:
    return GOLD[item_of(request)]


def verdict_json(label: str, confidence: float = 0.9) -> str:
    return json.dumps(
        {"label": label, "confidence": confidence, "reason": "scripted", "action": "none"}
    )


def label_json(label: str, confidence: float = 0.9) -> str:
    return json.dumps({"label": label, "confidence": confidence, "reason": "scripted"})
