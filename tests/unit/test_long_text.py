"""Long texts: splitting into parts, and map-reduce summaries with a fake model."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopgram.assistants import ASSISTANTS
from loopgram.assistants.long_text import MAX_LEVELS, LongTextSummarizer, split_text

SUMMARIZE = ASSISTANTS["summarize"]
_PART = re.compile(r"part (\d+) of (\d+)|часть (\d+) из (\d+)")

# ------------------------------------------------------------------------- split_text

# Spaces only: a newline or a tab between words is a separate case (see the xfail below).
SEPARATORS = st.sampled_from([" ", " ", " ", "  "])


@st.composite
def texts(draw: st.DrawFn) -> tuple[str, int, list[str]]:
    """(text, max_chars, paragraphs): paragraphs of sentences of words, every word at most a
    third of max_chars (a word longer than a part has to be cut, so it is left out here)."""
    max_chars = draw(st.integers(50, 400))
    word = st.text(
        alphabet=st.characters(categories=("L", "N", "P")), min_size=1, max_size=max_chars // 3
    )
    paragraphs = []
    for _ in range(draw(st.integers(0, 8))):
        paragraph = ""
        for _ in range(draw(st.integers(1, 6))):
            words = draw(st.lists(word, min_size=1, max_size=25))
            sentence = ""
            for w in words:
                sentence += (draw(SEPARATORS) if sentence else "") + w
            end = draw(st.sampled_from([".", "!", "?", "…", ""]))
            paragraph += (draw(SEPARATORS) if paragraph else "") + sentence + end
        paragraphs.append(paragraph)
    glue = st.sampled_from(["\n\n", "\n\n\n", "\n \n", "\r\n\r\n"])
    text = ""
    for p in paragraphs:
        text += (draw(glue) if text else "") + p
    return text, max_chars, paragraphs


@settings(max_examples=300, deadline=None)
@given(case=texts())
def test_split_text_properties(case: tuple[str, int, list[str]]) -> None:
    text, max_chars, paragraphs = case
    parts = split_text(text, max_chars)
    assert all(len(part) <= max_chars for part in parts)
    assert all(part.strip() for part in parts)
    assert all(part == part.strip() for part in parts)
    # Nothing lost, nothing added, nothing reordered.
    assert " ".join(parts).split() == text.split()
    # A paragraph that fits stays whole, inside one part.
    for paragraph in paragraphs:
        paragraph = paragraph.strip()
        if len(paragraph) <= max_chars:
            assert sum(paragraph in part for part in parts) >= 1, (paragraph, parts)


@settings(max_examples=200, deadline=None)
@given(
    chars=st.text(min_size=0, max_size=2000),
    max_chars=st.integers(50, 300),
)
def test_split_text_never_exceeds_the_budget_and_keeps_every_character(
    chars: str, max_chars: int
) -> None:
    """Any input at all (one huge word, odd whitespace, control characters): parts fit,
    none is empty, and the non-space characters come back in order."""
    parts = split_text(chars, max_chars)
    assert all(0 < len(part) <= max_chars for part in parts)
    assert all(part.strip() for part in parts)
    assert "".join("".join(parts).split()) == "".join(chars.split())


def test_split_text_packs_paragraphs_greedily() -> None:
    a, b, c = "A" * 30, "B" * 30, "C" * 30
    assert split_text(f"{a}\n\n{b}\n\n{c}", 65) == [f"{a}\n\n{b}", c]
    assert split_text(f"{a}\n\n{b}\n\n{c}", 200) == [f"{a}\n\n{b}\n\n{c}"]
    assert split_text(f"{a}\n\n{b}\n\n{c}", 50) == [a, b, c]


def test_split_text_cuts_long_paragraphs_at_sentences() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(10)]  # 27-28 chars each
    parts = split_text(" ".join(sentences), 60)
    assert parts == [f"{sentences[i]}\n\n{sentences[i + 1]}" for i in range(0, 10, 2)]


def test_split_text_cuts_a_long_sentence_between_words() -> None:
    words = [f"word{i:02d}" for i in range(40)]  # 6 chars each
    parts = split_text(" ".join(words), 50)
    assert " ".join(parts).split() == words  # no word was cut in two
    assert all(len(p) <= 50 for p in parts)
    assert len(parts) == 6


def test_split_text_cuts_one_endless_word() -> None:
    assert split_text("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]


def test_split_text_does_not_cut_a_word_that_fits() -> None:
    text = "x" * 10 + " " + "y" * 45  # one sentence, 56 chars; each word fits in 50
    parts = split_text(text, 50)
    assert " ".join(parts).split() == text.split()


@pytest.mark.parametrize("separator", ["\n", "\t"])
def test_split_text_cuts_at_newlines_and_tabs_too(separator: str) -> None:
    rows = [f"row{i:04d},ok" for i in range(30)]  # 10 chars each, no spaces
    parts = split_text(separator.join(rows), 50)
    assert " ".join(parts).split() == rows


def test_split_text_empty_and_tiny_budgets() -> None:
    assert split_text("", 50) == []
    assert split_text(" \n\n \t ", 50) == []
    assert split_text("  one short text  ", 50) == ["one short text"]
    with pytest.raises(ValueError, match="at least 50"):
        split_text("text", 49)


# ---------------------------------------------------------------- LongTextSummarizer


class FakeModel:
    """Summarises each part as one short note naming the part; records every call."""

    def __init__(self, note_chars: int = 0, *, delay: bool = False) -> None:
        self.note_chars = note_chars
        self.delay = delay
        self.calls: list[list[dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def note(self, messages: Sequence[dict[str, str]]) -> str:
        first = messages[-1]["content"].split()[0]
        return f"- note on {first}"

    async def __call__(self, messages: Sequence[dict[str, str]]) -> str:
        self.calls.append([dict(m) for m in messages])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            index = int(_PART.search(messages[0]["content"]).group(1) or 0)  # type: ignore[union-attr]
            # Later parts answer first, so the order of notes cannot come from timing.
            await asyncio.sleep(0.002 * (10 - index) if self.delay else 0)
            return f"  {self.note(messages)}  "
        finally:
            self.in_flight -= 1


class LongNotes(FakeModel):
    """Notes on the original paragraphs are long (they overflow the budget together); notes
    on notes are short, so exactly a second level is needed."""

    def note(self, messages: Sequence[dict[str, str]]) -> str:
        content = messages[-1]["content"]
        if content.startswith("PARA"):
            return f"- {content.split()[0]} " + "n" * 110
        return "- short"


def paragraphs(n: int, *, word: str = "PARA", size: int = 150) -> str:
    out = []
    for i in range(n):
        head = f"{word}{i} "
        out.append(head + ("lorem ipsum " * 30)[: size - len(head)].strip() + ".")
    return "\n\n".join(out)


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    async def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


async def test_one_level_map_reduce() -> None:
    text = paragraphs(5)
    model = FakeModel(delay=True)
    progress = Progress()
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=200)
    assert summarizer.needs_condensing(text)
    messages, plan = await summarizer.final_messages(
        text, lang="en", options={"format": "bullets"}, progress=progress
    )
    assert (plan.parts, plan.levels, plan.calls) == (5, 1, 5)
    assert len(model.calls) == 5
    # Each part went out once, with its own "part i of 5" prompt, in English.
    seen = {}
    for call in model.calls:
        assert [m["role"] for m in call] == ["system", "user"]
        match = _PART.search(call[0]["content"])
        assert match is not None and match.group(2) == "5"
        assert "in English" in call[0]["content"]
        seen[int(match.group(1))] = call[1]["content"]
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert [seen[i].split()[0] for i in range(1, 6)] == [f"PARA{i}" for i in range(5)]
    # Progress: one step per call, increasing, ending at done == total.
    assert [done for done, _ in progress.calls] == [1, 2, 3, 4, 5]
    assert all(total == 5 for _, total in progress.calls)
    # The reduce prompt: the combine prompt with the chosen format, and the notes in order
    # (even though the later parts were answered first).
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "notes on the parts of one long text" in messages[0]["content"]
    assert "summarize the whole text in English" in messages[0]["content"]
    assert "bullet points, each starting with '- '" in messages[0]["content"]
    assert messages[1]["content"] == "\n\n".join(f"- note on PARA{i}" for i in range(5))
    assert len(messages[1]["content"]) <= 200


async def test_notes_too_long_for_the_budget_need_a_second_level() -> None:
    text = paragraphs(4)
    model = LongNotes()
    progress = Progress()
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=200)
    messages, plan = await summarizer.final_messages(text, lang="en", options={}, progress=progress)
    assert plan.parts == 4
    assert plan.levels == 2
    second_level = [c for c in model.calls if not c[1]["content"].startswith("PARA")]
    assert len(second_level) >= 2  # 4 long notes of ~120 chars do not fit 2 to a part
    assert plan.calls == len(model.calls) == 4 + len(second_level)
    for call in second_level:
        assert call[1]["content"].startswith("- PARA")
        assert len(call[1]["content"]) <= 200
        assert f"of {len(second_level)}" in call[0]["content"]
    # Progress grows its total when the second level is planned; it ends at done == total.
    dones = [d for d, _ in progress.calls]
    assert dones == list(range(1, plan.calls + 1))
    assert progress.calls[0][1] == 4
    assert progress.calls[-1] == (plan.calls, plan.calls)
    assert all(d <= t for d, t in progress.calls)
    # The default format sentence, and only the short second-level notes in the prompt.
    assert "Write a few sentences." in messages[0]["content"]
    assert messages[1]["content"] == "\n\n".join(["- short"] * len(second_level))


async def test_levels_are_bounded_and_the_final_prompt_still_fits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NeverShort(FakeModel):
        def note(self, messages: Sequence[dict[str, str]]) -> str:
            return "- " + "m" * 150

    model = NeverShort()
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=200)
    with caplog.at_level(logging.WARNING, logger="loopgram.assistants.long_text"):
        messages, plan = await summarizer.final_messages(paragraphs(3), lang="en", options={})
    assert plan.levels == MAX_LEVELS
    assert plan.calls == len(model.calls) == 3 * MAX_LEVELS
    assert len(messages[1]["content"]) <= 200
    assert "summary.notes_truncated" in caplog.text


async def test_russian_text_gets_russian_prompts() -> None:
    text = paragraphs(3, word="АБЗАЦ", size=150).replace("lorem ipsum", "съешь ещё")
    lang = SUMMARIZE.answer_language(lang="en", text=text, options={})  # as the service does
    assert lang == "ru"
    model = FakeModel()
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=200)
    messages, plan = await summarizer.final_messages(text, lang=lang, options={"format": "bullets"})
    assert plan.parts == len(model.calls) == 3
    for call in model.calls:
        system = call[0]["content"]
        assert re.search(r"Это часть [123] из 3 длинного текста", system), system
        assert "по-русски" in system
        assert "part" not in system
    assert messages[0]["content"].startswith("Это заметки о частях одного длинного текста")
    assert "перескажи весь текст по-русски" in messages[0]["content"]
    assert "от 3 до 6 коротких пунктов" in messages[0]["content"]


async def test_unknown_format_falls_back_to_the_default_sentence() -> None:
    summarizer = LongTextSummarizer(SUMMARIZE, complete=FakeModel(), budget_chars=200)
    messages, _ = await summarizer.final_messages(
        paragraphs(3), lang="en", options={"format": "haiku"}
    )
    assert messages[0]["content"].endswith("Write a few sentences.")
    assert "{" not in messages[0]["content"]


async def test_parts_run_concurrently_within_the_limit() -> None:
    model = FakeModel(delay=True)
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=200, concurrency=2)
    _, plan = await summarizer.final_messages(paragraphs(6), lang="en", options={})
    assert plan.calls == 6
    assert model.max_in_flight == 2


async def test_a_text_within_the_budget_is_one_part() -> None:
    model = FakeModel()
    summarizer = LongTextSummarizer(SUMMARIZE, complete=model, budget_chars=500)
    text = paragraphs(2)
    assert not summarizer.needs_condensing(text)
    messages, plan = await summarizer.final_messages(text, lang="en", options={})
    assert (plan.parts, plan.levels, plan.calls) == (1, 1, 1)
    assert "part 1 of 1" in model.calls[0][0]["content"]
    assert messages[1]["content"] == "- note on PARA0"
