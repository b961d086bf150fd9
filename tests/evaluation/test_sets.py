"""The shipped evaluation sets load, meet their sizes, and stay apart from the few-shot
examples; broken sets fail with a message that says where."""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from loopgram.assistants.base import PROMPTS_DIR
from loopgram.assistants.label import default_label_set
from loopgram.evaluation.sets import (
    EVALUATED,
    EvalSetError,
    labels_of,
    load_set,
    parse_set,
    spread,
)


def few_shot_texts() -> list[str]:
    texts = []
    for path in PROMPTS_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for lang in ("en", "ru"):
            section = data.get(lang) if isinstance(data, dict) else None
            for example in (section or {}).get("examples") or []:
                texts += [str(example["user"]), str(example["assistant"])]
    return texts


@pytest.mark.parametrize("assistant", EVALUATED)
def test_set_is_bilingual_mostly_english(assistant: str) -> None:
    items = load_set(assistant).items
    english = sum(item.lang == "en" for item in items) / len(items)
    assert 0.55 <= english <= 0.75, english
    assert len({item.id for item in items}) == len(items)


@pytest.mark.parametrize("assistant", EVALUATED)
def test_no_overlap_with_few_shot_examples(assistant: str) -> None:
    shots = [" ".join(text.lower().split()) for text in few_shot_texts()]
    assert shots, "the prompt files hold few-shot examples"
    for item in load_set(assistant).items:
        text = " ".join(item.text.lower().split())
        for shot in shots:
            ratio = difflib.SequenceMatcher(None, text, shot).ratio()
            assert ratio < 0.7, (item.id, shot)


def test_paraphrase_set() -> None:
    items = load_set("paraphrase").items
    assert len(items) >= 24
    styles = Counter(item.options.get("style") for item in items)
    assert {"formal", "friendly", "concise", "simpler"} <= set(styles)
    targets = Counter((item.lang, item.options.get("target")) for item in items)
    assert targets[("ru", "en")] >= 2 and targets[("en", "ru")] >= 2


def test_summarize_set() -> None:
    items = load_set("summarize").items
    assert len(items) >= 12
    for item in items:
        assert 80 <= len(item.text.split()) <= 250, item.id
        assert 3 <= len(item.key_points) <= 5, item.id
        assert all(len(point.split()) <= 12 for point in item.key_points), item.id


def test_moderate_set() -> None:
    labels = Counter(item.label for item in load_set("moderate").items)
    assert sum(labels.values()) >= 40
    assert labels["ok"] >= 10
    assert set(labels) == set(labels_of("moderate"))
    assert min(labels.values()) >= 5, labels


def test_label_set_uses_the_default_labels() -> None:
    labels = Counter(item.label for item in load_set("label").items)
    assert sum(labels.values()) >= 40
    assert set(labels) == set(default_label_set().names)
    assert min(labels.values()) >= 6, labels


def test_limit_spreads_over_labels_and_languages() -> None:
    short = load_set("moderate", limit=12).items
    assert len(short) == 12
    assert set(item.label for item in short) == set(labels_of("moderate"))
    assert {"en", "ru"} == {item.lang for item in short}
    summaries = load_set("summarize", limit=3).items
    assert [item.lang for item in summaries].count("ru") == 1
    assert len(load_set("label", limit=1000).items) == len(load_set("label").items)
    with pytest.raises(EvalSetError, match="at least 1"):
        load_set("label", limit=0)


def test_spread_keeps_groups_in_proportion_and_order() -> None:
    items = ["a1", "a2", "a3", "a4", "b1", "b2"]
    assert spread(items, lambda item: item[0]) == ["a1", "b1", "a2", "a3", "b2", "a4"]


def test_no_set_for_chat() -> None:
    with pytest.raises(EvalSetError, match="no evaluation set for 'chat'"):
        load_set("chat")


ITEM = {"id": "x", "lang": "en", "text": "Hello there, how are you?"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"assistant": "moderate", "items": [{**ITEM, "label": "rude"}]}, "not one of"),
        ({"assistant": "label", "items": [{**ITEM, "label": "spam"}]}, "not one of"),
        ({"assistant": "moderate", "items": [{**ITEM, "lang": "ru", "label": "ok"}]}, "lang"),
        ({"assistant": "paraphrase", "items": [{**ITEM, "options": {"style": "poem"}}]}, "option"),
        ({"assistant": "paraphrase", "items": [{**ITEM, "label": "ok"}]}, "take no label"),
        ({"assistant": "summarize", "items": [{**ITEM, "key_points": ["a"]}]}, "3-5 key points"),
        ({"assistant": "moderate", "items": [{**ITEM, "label": "ok"}] * 2}, "duplicate"),
        ({"assistant": "chat", "items": [ITEM]}, "assistant"),
        ({"assistant": "label", "items": []}, "items"),
        ({"assistant": "label", "items": [{**ITEM, "label": "other", "extra": 1}]}, "extra"),
    ],
)
def test_invalid_sets_are_refused(data: object, message: str) -> None:
    with pytest.raises(EvalSetError, match=message) as raised:
        parse_set(yaml.safe_dump(data), source="broken.yaml")
    assert str(raised.value).startswith("broken.yaml: ")


def test_unreadable_and_mismatched_files(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="cannot read"):
        load_set("label", path=tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("items: [unclosed", encoding="utf-8")
    with pytest.raises(EvalSetError, match="not valid YAML"):
        load_set("label", path=tmp_path / "bad.yaml")
    other = tmp_path / "mod.yaml"
    other.write_text(
        yaml.safe_dump({"assistant": "moderate", "items": [{**ITEM, "label": "ok"}]}),
        encoding="utf-8",
    )
    with pytest.raises(EvalSetError, match="is a set for moderate, not label"):
        load_set("label", path=other)
    assert len(load_set("moderate", path=other).items) == 1
