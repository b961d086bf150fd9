"""The runner and the base-vs-adapter comparison against the scripted model server."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from loopgram.assistants import get_assistant
from loopgram.errors import LoopgramError, ModelUnavailableError
from loopgram.evaluation.compare import compare
from loopgram.evaluation.runner import evaluate
from loopgram.evaluation.sets import load_set
from tests.evaluation.answers import (
    GARBAGE,
    gold_of,
    is_repair,
    label_json,
    verdict_json,
)
from tests.evaluation.conftest import Serve
from tests.label_model import item_of
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend


async def test_perfect_moderation_scores_one(serve: Serve) -> None:
    backend = ScriptedBackend(lambda request: verdict_json(gold_of(request)))
    llm = await serve(backend)
    seen: list[tuple[int, int]] = []
    result = await evaluate(
        "moderate", llm=llm, model="loopgram-base", progress=lambda d, t: seen.append((d, t))
    )
    size = len(load_set("moderate").items)
    assert result.metrics["accuracy"] == 1.0
    assert result.metrics["macro_f1"] == 1.0
    assert result.metrics["invalid_rate"] == 0.0
    assert result.metrics["repaired_rate"] == 0.0
    assert all(result.metrics[f"f1_{label}"] == 1.0 for label in ("ok", "spam", "adult"))
    assert len(result.items) == size and all(item.ok for item in result.items)
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert len(backend.requests) == size
    # asked as the bot asks: system prompt, few-shot examples, then the item; greedy
    request = backend.requests[0]
    assert request.messages[0]["role"] == "system"
    assert request.temperature == 0.0
    assert request.max_tokens == get_assistant("moderate").max_tokens  # the assistant's own cap
    doc = result.as_dict()
    assert doc["assistant"] == "moderate" and doc["adapter"] is None
    assert doc["items"][0].keys() >= {"input", "output", "expected", "ok"}
    json.dumps(doc)


async def test_perfect_labels_score_one_with_kappa(serve: Serve) -> None:
    backend = ScriptedBackend(lambda request: label_json(gold_of(request), 0.95))
    llm = await serve(backend)
    result = await evaluate("label", llm=llm, model="loopgram-base", max_tokens=40)
    metrics = result.metrics
    assert metrics["accuracy"] == metrics["kappa"] == metrics["macro_f1"] == 1.0
    assert metrics["needs_human_rate"] == 0.0 and metrics["confident_accuracy"] == 1.0
    assert all(request.max_tokens == 40 for request in backend.requests)
    # the prompt lists the default label set
    assert "- praise: thanks or compliments" in backend.requests[0].messages[0]["content"]


async def test_invalid_once_then_valid_is_repaired_not_invalid(serve: Serve) -> None:
    def reply(request: GenerationRequest) -> str:
        return verdict_json(gold_of(request)) if is_repair(request) else GARBAGE

    backend = ScriptedBackend(reply)
    llm = await serve(backend)
    eval_set = load_set("moderate", limit=8)
    result = await evaluate("moderate", llm=llm, model="loopgram-base", eval_set=eval_set)
    assert result.metrics["accuracy"] == 1.0
    assert result.metrics["invalid_rate"] == 0.0
    assert result.metrics["repaired_rate"] == 1.0
    assert len(backend.requests) == 16
    assert all(item.details["attempts"] == 2 for item in result.items)
    # the repair turn quotes the error after the model's own reply
    repair = next(request for request in backend.requests if is_repair(request)).messages
    assert repair[-2] == {"role": "assistant", "content": GARBAGE}
    assert "not valid" in repair[-1]["content"] or "неверен" in repair[-1]["content"]


async def test_invalid_twice_is_invalid_and_wrong(serve: Serve) -> None:
    llm = await serve(ScriptedBackend(GARBAGE))
    eval_set = load_set("label", limit=5)
    result = await evaluate("label", llm=llm, model="loopgram-base", eval_set=eval_set)
    assert result.metrics["invalid_rate"] == 1.0
    assert result.metrics["accuracy"] == 0.0
    assert result.metrics["repaired_rate"] == 0.0
    assert result.metrics["needs_human_rate"] == 1.0
    assert "confident_accuracy" not in result.metrics
    assert all(not item.ok and item.details["invalid"] for item in result.items)
    assert result.items[0].output == GARBAGE


async def test_label_outside_the_set_is_repaired_or_invalid(serve: Serve) -> None:
    items = load_set("label").items
    alien_once = {item.text for item in items[::2]}  # a right label on the repair turn

    def reply(request: GenerationRequest) -> str:
        if item_of(request) in alien_once and is_repair(request):
            return label_json(gold_of(request))
        return label_json("spaceship")

    llm = await serve(ScriptedBackend(reply))
    result = await evaluate("label", llm=llm, model="loopgram-base")
    by_id = {record.id: record for record in result.items}
    repaired = [by_id[item.id] for item in items[::2]]
    refused = [by_id[item.id] for item in items[1::2]]
    assert all(r.ok and r.details["attempts"] == 2 for r in repaired)
    assert all(
        not r.ok and r.details["invalid"] and r.details["predicted"] is None for r in refused
    )
    assert result.metrics["invalid_rate"] == pytest.approx(len(refused) / len(items))
    assert result.metrics["repaired_rate"] == pytest.approx(len(repaired) / len(items))
    assert result.metrics["accuracy"] == pytest.approx(len(repaired) / len(items))


async def test_paraphrase_echo_is_a_copy(serve: Serve) -> None:
    """Answering with the source keeps the meaning but is a copy, and a translation item
    answered in the source language is in the wrong language."""
    llm = await serve(ScriptedBackend(item_of))
    result = await evaluate("paraphrase", llm=llm, model="loopgram-base")
    items = load_set("paraphrase").items
    translations = sum(1 for item in items if item.options.get("target") not in (None, "same"))
    assert result.metrics["copy_rate"] == 1.0
    assert result.metrics["ok_rate"] == 0.0
    assert result.metrics["length_ratio"] == pytest.approx(1.0)
    assert result.metrics["language_correct_rate"] == pytest.approx(1 - translations / len(items))
    if result.embedder == "e5-small":
        assert result.metrics["meaning_similarity"] > 0.99
        assert result.metrics["meaning_kept_rate"] == 1.0
    record = next(r for r in result.items if r.id == "en-hotel-to-ru")
    assert record.expected == "ru" and not record.details["language_ok"]


async def test_the_rewrite_length_bound_reaches_every_item(serve: Serve) -> None:
    """Answers half as long again as their source pass the default bound (2) and fail 1.2;
    each record says which bound judged it. A bound out of range is refused before any
    request."""

    def longer(request: GenerationRequest) -> str:
        text = item_of(request).strip()
        return f"{text} {text[: len(text) // 2]}"

    backend = ScriptedBackend(longer)
    llm = await serve(backend)
    items = load_set("paraphrase", limit=4)
    loose = await evaluate("paraphrase", llm=llm, model="loopgram-base", eval_set=items)
    strict = await evaluate(
        "paraphrase", llm=llm, model="loopgram-base", eval_set=items, max_rewrite_length=1.2
    )
    assert loose.metrics["length_ratio"] == pytest.approx(1.5, abs=0.05)
    assert loose.metrics["length_ok_rate"] == 1.0
    assert strict.metrics["length_ok_rate"] == 0.0 and strict.metrics["ok_rate"] == 0.0
    assert {r.details["max_length_ratio"] for r in loose.items} == {2.0}
    assert {r.details["max_length_ratio"] for r in strict.items} == {1.2}
    asked = len(backend.requests)
    with pytest.raises(ValueError, match=r"between 0\.5 and 10"):
        await evaluate("paraphrase", llm=llm, model="loopgram-base", max_rewrite_length=0.1)
    assert len(backend.requests) == asked


async def test_summaries_echo_and_empty(serve: Serve) -> None:
    eval_set = load_set("summarize", limit=4)
    echo = await evaluate(
        "summarize",
        llm=await serve(ScriptedBackend(item_of)),
        model="loopgram-base",
        eval_set=eval_set,
    )
    assert echo.metrics["key_point_coverage"] == 1.0
    assert echo.metrics["compression_ratio"] == pytest.approx(1.0)
    assert echo.metrics["language_correct_rate"] == 1.0
    assert echo.metrics["ok_rate"] == 0.0  # the text itself is no summary
    empty = await evaluate(
        "summarize",
        llm=await serve(ScriptedBackend("")),
        model="loopgram-base",
        eval_set=eval_set,
    )
    assert empty.metrics["key_point_coverage"] == 0.0
    assert empty.metrics["ok_rate"] == 0.0
    assert empty.items[0].expected == list(eval_set.items[0].key_points)


async def test_model_failure_ends_the_run(serve: Serve) -> None:
    llm = await serve(ScriptedBackend("x", fail=RuntimeError("down")))
    with pytest.raises(ModelUnavailableError):
        await evaluate("paraphrase", llm=llm, model="loopgram-base", concurrency=2)


async def test_chat_and_unknown_assistants_are_refused(serve: Serve) -> None:
    llm = await serve(ScriptedBackend("x"))
    with pytest.raises(LoopgramError, match="'chat' has no evaluation set"):
        await evaluate("chat", llm=llm, model="loopgram-base")
    with pytest.raises(LoopgramError, match=r"unknown assistant 'poet'.*paraphrase"):
        await evaluate("poet", llm=llm, model="loopgram-base")


async def test_compare_base_and_adapter_on_the_same_set(serve: Serve) -> None:
    def reply(request: GenerationRequest) -> str:
        if request.model == "label-v3":
            return label_json(gold_of(request))
        return label_json("other", 0.4)  # the base model calls everything "other"

    backend = ScriptedBackend(reply, model_ids=("loopgram-base", "label-v3"))
    llm = await serve(backend)
    eval_set = load_set("label")
    seen: list[tuple[int, int]] = []
    comparison = await compare(
        "label",
        llm=llm,
        base_model="loopgram-base",
        adapter="label-v3",
        eval_set=eval_set,
        progress=lambda d, t: seen.append((d, t)),
    )
    size = len(eval_set.items)
    others = sum(1 for item in eval_set.items if item.label == "other")
    assert [r.model for r in backend.requests].count("label-v3") == size
    assert seen[-1] == (2 * size, 2 * size)
    doc = comparison.as_dict()
    assert doc["assistant"] == "label" and doc["adapter"] == "label-v3"
    assert doc["items"] == size
    assert doc["metrics"]["accuracy"] == 1.0
    assert doc["base_metrics"]["accuracy"] == pytest.approx(others / size, abs=1e-4)
    assert doc["base_metrics"]["needs_human_rate"] == 1.0
    # nothing the base model said was confident enough to skip a person
    assert "confident_accuracy" not in doc["base_metrics"]
    assert doc["metrics"]["confident_accuracy"] == 1.0
    json.dumps(doc)

    console = Console(record=True, width=140)
    console.print(comparison.table())
    text = console.export_text()
    assert "label-v3" in text and "accuracy" in text
    assert f"+{1 - others / size:.3f}" in text  # Δ accuracy
    assert "-1.000" in text  # Δ needs_human_rate
    assert "—" in text  # confident_accuracy has no base value


async def test_compare_without_adapter_reports_the_base(serve: Serve) -> None:
    backend = ScriptedBackend(lambda request: verdict_json(gold_of(request)))
    llm = await serve(backend)
    eval_set = load_set("moderate", limit=6)
    comparison = await compare(
        "moderate", llm=llm, base_model="loopgram-base", adapter=None, eval_set=eval_set
    )
    doc = comparison.as_dict()
    assert doc["adapter"] is None
    assert doc["metrics"] == doc["base_metrics"]
    assert len(backend.requests) == 6
    console = Console(record=True, width=140)
    console.print(comparison.table())
    assert "none active" in console.export_text()
