"""Strict structured answers: finding the JSON, validating it, one repair turn, clear failure."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopgram.assistants.label import LabelResult, check_label_in
from loopgram.assistants.moderate import ModerationAction, ModerationLabel, Verdict
from loopgram.assistants.structured import (
    InvalidOutput,
    StructuredOutputError,
    complete_structured,
    parse_json_object,
    parse_structured,
)
from loopgram.errors import LoopgramError

REPAIR = "Your answer was not valid: {error}. Answer again with only the JSON object."
GOOD = '{"label": "spam", "confidence": 0.9, "reason": "Advertising.", "action": "delete"}'


# ------------------------------------------------------------------- parse_json_object


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```JSON\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here is the verdict:\n```json\n{"a": 1}\n```\nHope it helps!', {"a": 1}),
        ('Sure! The answer is {"a": 1} as requested.', {"a": 1}),
        ('Sure!\n\n{"a": 1}\n\nLet me know.', {"a": 1}),
        ('{"a": 1,}', {"a": 1}),
        ('{"a": [1, 2, ], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}),
        ('{\n  "a": 1,\n}\n', {"a": 1}),
        ('{"a": "x}y{", "b": 2}', {"a": "x}y{", "b": 2}),
        ('{"a": "} closing first"}', {"a": "} closing first"}),
        ('{"a": "an escaped \\" quote and a } brace"}', {"a": 'an escaped " quote and a } brace'}),
        ('{"a": "ends with a backslash \\\\"} tail', {"a": "ends with a backslash \\"}),
        ('{"a": {"b": {"c": [1, {"d": 2}]}}}', {"a": {"b": {"c": [1, {"d": 2}]}}}),
        ('"quoted prose" then {"a": 1}', {"a": 1}),
        ('it\'s fine: {"a": "it\'s"}', {"a": "it's"}),
        ('{"a": 1} {"a": 2}', {"a": 1}),  # several objects: the first valid one
        ('{not json} {"a": 2} {"a": 3}', {"a": 2}),  # the first one is broken: the next
        ('{"label": "<one label>", "confidence": <0.0-1.0>} {"a": 5}', {"a": 5}),  # template
        ('```json\n{"a": 1}\n``` or maybe {"a": 2}', {"a": 1}),
        ('```json\n{"a": 1, broken}\n```\n{"a": 2}', {"a": 2}),  # bad fence: braces next
        ('{"emoji": "⛔", "ru": "спам"}', {"emoji": "⛔", "ru": "спам"}),
    ],
)
def test_parse_json_object(text: str, expected: dict[str, object]) -> None:
    assert parse_json_object(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        "[1, 2, 3]",  # an array is not an object
        '"just a string"',
        "42",
        "{unquoted: keys}",
        '{"a": 1',  # never closed
        "} {",
        "```json\n[1]\n```",
    ],
)
def test_parse_json_object_without_an_object(text: str) -> None:
    with pytest.raises(InvalidOutput, match="no JSON object"):
        parse_json_object(text)


def test_trailing_comma_fix_leaves_strings_alone() -> None:
    text = '{"reason": "sizes S, M, ]", "label": "ok",}'
    assert parse_json_object(text) == {"reason": "sizes S, M, ]", "label": "ok"}


@pytest.mark.parametrize(
    "text",
    [
        'Hmm :-{ here it is: {"a": 1}',
        '```json\n{"a": \n```\nSorry, cut off. Again: {"a": 1}',
    ],
)
def test_an_unclosed_brace_does_not_hide_the_object(text: str) -> None:
    assert parse_json_object(text) == {"a": 1}


# -------------------------------------------------------------------- parse_structured


def test_parse_structured_valid_verdict() -> None:
    verdict = parse_structured(f"Verdict:\n```json\n{GOOD}\n```", Verdict)
    assert verdict == Verdict(
        label=ModerationLabel.spam,
        confidence=0.9,
        reason="Advertising.",
        action=ModerationAction.delete,
    )
    assert verdict.harmful
    # The canonical form parses back to the same verdict.
    assert parse_structured(verdict.canonical(), Verdict) == verdict


def test_parse_structured_action_defaults_to_none() -> None:
    verdict = parse_structured('{"label": "ok", "confidence": 1, "reason": "Fine."}', Verdict)
    assert verdict.action is ModerationAction.none
    assert not verdict.harmful


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"label": "ok", "confidence": 0.9, "reason": "x", "mood": "calm"}', "mood"),
        ('{"label": "ok", "confidence": 1.01, "reason": "x"}', "confidence"),
        ('{"label": "ok", "confidence": -0.1, "reason": "x"}', "confidence"),
        ('{"label": "rude", "confidence": 0.5, "reason": "x"}', "label"),
        ('{"label": "ok", "confidence": 0.5, "reason": "x", "action": "ban"}', "action"),
        ('{"label": "ok", "confidence": 0.5, "reason": ""}', "reason"),
        ('{"label": "ok", "confidence": 0.5}', "reason"),
        ('{"confidence": 0.5, "reason": "x"}', "label"),
        ('{"label": "ok", "confidence": "very", "reason": "x"}', "confidence"),
    ],
)
def test_parse_structured_refuses_invalid_verdicts(answer: str, problem: str) -> None:
    with pytest.raises(InvalidOutput) as err:
        parse_structured(answer, Verdict)
    # The message names the field, so the repair turn can tell the model what to fix.
    assert str(err.value).startswith(problem), str(err.value)


def test_parse_structured_reports_several_problems() -> None:
    with pytest.raises(InvalidOutput) as err:
        parse_structured('{"label": "rude", "confidence": 3, "reason": "x", "x": 1}', Verdict)
    message = str(err.value)
    for field in ("label", "confidence", "x"):
        assert f"{field}:" in message


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"label": "question", "confidence": 0.9, "reason": "", "tone": "calm"}', "tone"),
        ('{"label": "question", "confidence": 1.5}', "confidence"),
        ('{"label": "", "confidence": 0.5}', "label"),
        ('{"label": "' + "x" * 33 + '", "confidence": 0.5}', "label"),
    ],
)
def test_parse_structured_refuses_invalid_label_results(answer: str, problem: str) -> None:
    with pytest.raises(InvalidOutput) as err:
        parse_structured(answer, LabelResult)
    assert str(err.value).startswith(problem), str(err.value)


def test_label_results_are_normalised_and_checked_against_the_set() -> None:
    result = parse_structured('{"label": " Question ", "confidence": 0.5}', LabelResult)
    assert result.label == "question"
    check = check_label_in(["question", "complaint"])
    check(result)  # in the set: no error
    with pytest.raises(InvalidOutput, match=r"'bug' is not one of: question, complaint"):
        check(LabelResult(label="bug", confidence=0.9))


def test_parse_structured_without_json() -> None:
    with pytest.raises(InvalidOutput, match="no JSON object"):
        parse_structured("The text is spam.", Verdict)


# ------------------------------------------------------------------- complete_structured


class FakeModel:
    """An async `complete` that replies from a script and records what it was sent."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict[str, str]]] = []

    async def __call__(self, messages: Sequence[dict[str, str]]) -> str:
        self.calls.append([dict(m) for m in messages])
        return self.replies.pop(0)


MESSAGES = [
    {"role": "system", "content": "You are a content moderator."},
    {"role": "user", "content": "Earn $500 a day!!!"},
]


async def test_complete_structured_valid_first_time() -> None:
    model = FakeModel(f"Sure: {GOOD}")
    answer = await complete_structured(model, MESSAGES, Verdict, repair_instruction=REPAIR)
    assert answer.attempts == 1
    assert answer.value.label is ModerationLabel.spam
    assert answer.raw == f"Sure: {GOOD}"
    assert model.calls == [MESSAGES]


async def test_complete_structured_repairs_once() -> None:
    bad = '{"label": "spam", "confidence": 1.7, "reason": "Ads."}'
    model = FakeModel(bad, GOOD)
    answer = await complete_structured(model, MESSAGES, Verdict, repair_instruction=REPAIR)
    assert answer.attempts == 2
    assert answer.raw == GOOD
    assert answer.value.confidence == 0.9
    assert len(model.calls) == 2
    second = model.calls[1]
    assert second[: len(MESSAGES)] == MESSAGES
    assert second[-2] == {"role": "assistant", "content": bad}
    assert second[-1]["role"] == "user"
    repair = second[-1]["content"]
    assert repair.startswith("Your answer was not valid: confidence:")
    assert "less than or equal to 1" in repair
    assert len(second) == len(MESSAGES) + 2
    # The caller's messages are not changed in place.
    assert len(MESSAGES) == 2


async def test_complete_structured_gives_up_after_the_repair() -> None:
    model = FakeModel("I cannot decide.", "Still prose, sorry.")
    with pytest.raises(StructuredOutputError) as err:
        await complete_structured(model, MESSAGES, Verdict, repair_instruction=REPAIR)
    assert isinstance(err.value, LoopgramError)
    assert err.value.key == "error-structured-output"
    assert err.value.params["raw"] == "Still prose, sorry."
    assert "no JSON object" in str(err.value)
    assert len(model.calls) == 2
    # The repair turn quotes the first reply, not the second: only two calls, never three.
    assert model.calls[1][-2]["content"] == "I cannot decide."


async def test_second_repair_quotes_only_the_latest_reply() -> None:
    """Both bad replies fail, but the conversation never accumulates repair turns."""
    model = FakeModel("nope", "nope again")
    with pytest.raises(StructuredOutputError):
        await complete_structured(model, MESSAGES, Verdict, repair_instruction=REPAIR)
    assert [m["content"] for m in model.calls[1]].count("nope") == 1


async def test_validate_rejection_triggers_the_repair() -> None:
    outside = '{"label": "bug", "confidence": 0.8, "reason": "Reports a bug."}'
    inside = '{"label": "complaint", "confidence": 0.8, "reason": "Reports a bug."}'
    model = FakeModel(outside, inside)
    answer = await complete_structured(
        model,
        MESSAGES,
        LabelResult,
        repair_instruction=REPAIR,
        validate=check_label_in(["question", "complaint"]),
    )
    assert answer.attempts == 2
    assert answer.value.label == "complaint"
    repair = model.calls[1][-1]["content"]
    assert "'bug' is not one of: question, complaint" in repair


async def test_validate_rejecting_twice_fails() -> None:
    outside = '{"label": "bug", "confidence": 0.8, "reason": ""}'
    model = FakeModel(outside, outside)
    with pytest.raises(StructuredOutputError) as err:
        await complete_structured(
            model,
            MESSAGES,
            LabelResult,
            repair_instruction=REPAIR,
            validate=check_label_in(["question", "complaint"]),
        )
    assert err.value.params["raw"] == outside
    assert "'bug' is not one of" in str(err.value)


async def test_repair_instruction_with_braces_in_the_error() -> None:
    """The error text is a value: braces in it (from the model's JSON) do not break format."""
    model = FakeModel('{"label": "ok", "confidence": 0.5, "reason": "x", "{x}": 1}', GOOD)
    answer = await complete_structured(model, MESSAGES, Verdict, repair_instruction=REPAIR)
    assert answer.attempts == 2
    assert "{x}" in model.calls[1][-1]["content"]


# ---------------------------------------------------------------------------- property

PROSE = st.text(
    alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)),
    max_size=80,
)
VERDICTS = st.builds(
    Verdict,
    label=st.sampled_from(list(ModerationLabel)),
    confidence=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    reason=st.text(min_size=1, max_size=300).filter(lambda r: r.strip() == r and r != ""),
    action=st.sampled_from(list(ModerationAction)),
)


@settings(max_examples=300, deadline=None)
@given(
    verdict=VERDICTS,
    before=PROSE,
    after=PROSE,
    indent=st.sampled_from([None, 2]),
    ascii_only=st.booleans(),
    fence=st.booleans(),
)
def test_a_verdict_in_any_prose_parses_back(
    verdict: Verdict, before: str, after: str, indent: int | None, ascii_only: bool, fence: bool
) -> None:
    body = json.dumps(verdict.model_dump(mode="json"), indent=indent, ensure_ascii=ascii_only)
    if fence:
        body = f"```json\n{body}\n```"
    assert parse_structured(f"{before}{body}{after}", Verdict) == verdict
