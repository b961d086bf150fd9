"""A tiny causal LM built once per session, and rows with a learnable preference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from training.tiny_model import build_tiny_causal_lm

CORPUS = Path(__file__).resolve().parents[2] / "training" / "model_server" / "corpus" / "en.txt"
CONCISE = "Yes. Keep it short."
RAMBLING = "Well, it depends on many things, and there are so many details to consider here."


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [*CORPUS.read_text(encoding="utf-8").splitlines(), CONCISE, RAMBLING]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny", texts)


def pair_rows(n: int, *, offset: int = 0, flipped: bool = False) -> list[dict[str, Any]]:
    rows = []
    for i in range(offset, offset + n):
        chosen, rejected = (RAMBLING, CONCISE) if flipped else (CONCISE, RAMBLING)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question number {i}: can you help?"}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return rows


def thumb_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        liked = i % 2 == 0
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question number {i}: can you help?"}],
                "completion": [{"role": "assistant", "content": CONCISE if liked else RAMBLING}],
                "label": liked,
            }
        )
    return rows
