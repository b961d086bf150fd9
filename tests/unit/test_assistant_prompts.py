"""The domain assistants' prompts: language, options, few-shot layout, history, rendering.

Everything here goes through the public surface a handler uses (`ASSISTANTS`,
`build_messages`, `render`) and checks what the model or the user would actually see.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
import yaml

from loopgram.assistants import (
    ASSISTANTS,
    DEFAULT_ASSISTANT,
    Assistant,
    Example,
    PromptContext,
    get_assistant,
    text_language,
)
from loopgram.assistants.base import PROMPTS_DIR
from loopgram.assistants.label import LabelResult, default_label_set
from loopgram.assistants.moderate import Verdict
from loopgram.assistants.structured import parse_structured

EN_TEXT = "The shop on Main Street closes at 9 pm on weekdays and at 6 pm on Sundays."
RU_TEXT = "Магазин на Главной улице закрывается в 21:00 по будням и в 18:00 по воскресеньям."
HISTORY = [("earlier question one", "earlier answer one"), ("earlier question two", "answer two")]
LANGS = ("en", "ru")

_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
# The one literal JSON object a structured prompt shows the model.
_JSON_TEMPLATE = re.compile(r'\{"label": [^\n]*\}')


def cyrillic(text: str) -> int:
    return len(_CYRILLIC.findall(text))


def system(messages: list[dict[str, str]]) -> str:
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


def build(
    name: str,
    *,
    lang: str = "en",
    text: str = EN_TEXT,
    options: dict[str, str] | None = None,
    context: PromptContext | None = None,
    history: list[tuple[str, str]] | None = None,
) -> list[dict[str, str]]:
    return ASSISTANTS[name].build_messages(
        lang=lang,
        history=HISTORY if history is None else history,
        text=text,
        options=options,
        context=context,
    )


def assert_prompt_language(prompt: str, lang: str) -> None:
    """A Russian prompt talks to the model in Russian (`Ты ...`); an English one has no
    Cyrillic at all."""
    if lang == "ru":
        assert prompt.startswith("Ты "), prompt[:80]
        assert cyrillic(prompt) > 100, prompt
    else:
        assert prompt.startswith("You "), prompt[:80]
        assert cyrillic(prompt) == 0, prompt


def all_option_combinations(assistant: Assistant) -> Iterator[dict[str, str]]:
    groups = assistant.option_groups
    for values in itertools.product(*(g.choices for g in groups)):
        yield {g.name: v for g, v in zip(groups, values, strict=True)}


# ------------------------------------------------------------------------- text_language


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("Привет, как дела? Всё хорошо.", "en", "ru"),
        ("Hello, how are you? All good.", "ru", "en"),
        ("ЁЛКА ёлка", "en", "ru"),  # ё and upper case count as Cyrillic
        ("Мы используем Python и PostgreSQL для этого проекта", "en", "ru"),  # mostly Russian
        ("We deploy with Docker and Kubernetes, сказал он", "ru", "en"),  # mostly English
        ("12345 67-89", "ru", "ru"),  # no letters at all: the caller's default
        ("12345 67-89", "en", "en"),
        ("", "ru", "ru"),
        ("!!! ??? 42", "de", "en"),  # an unsupported default falls back to English
    ],
)
def test_text_language(text: str, default: str, expected: str) -> None:
    assert text_language(text, default=default) == expected


def test_text_language_default_is_english() -> None:
    assert text_language("2024-01-01 12:00") == "en"


# ---------------------------------------------------------------------- the registry


def test_registry_has_the_five_assistants_and_falls_back_to_chat() -> None:
    assert set(ASSISTANTS) == {"chat", "paraphrase", "summarize", "moderate", "label"}
    assert DEFAULT_ASSISTANT == "chat"
    assert get_assistant(None).name == "chat"
    assert get_assistant("no-such-assistant").name == "chat"
    assert get_assistant("label") is ASSISTANTS["label"]
    assert {a.name for a in ASSISTANTS.values() if a.structured} == {"moderate", "label"}


# ------------------------------------------------------- the language of the system prompt


@pytest.mark.parametrize("name", sorted(ASSISTANTS))
@pytest.mark.parametrize("lang", LANGS)
def test_system_prompt_language(name: str, lang: str) -> None:
    """Paraphrase and summarize answer in the text's language whatever the interface is;
    chat, moderate and label answer in the interface language whatever the text is."""
    for text in (EN_TEXT, RU_TEXT):
        prompt = system(build(name, lang=lang, text=text))
        follows_text = name in ("paraphrase", "summarize")
        expected = ("ru" if text is RU_TEXT else "en") if follows_text else lang
        assert_prompt_language(prompt, expected)


@pytest.mark.parametrize(
    "name",
    [
        "chat",
        "paraphrase",
        "summarize",
        "moderate",
        pytest.param(
            "label",
        ),
    ],
)
def test_every_prompt_names_its_language(name: str) -> None:
    en = system(build(name, lang="en", text=EN_TEXT))
    ru = system(build(name, lang="ru", text=RU_TEXT))
    assert "English" in en
    assert "по-русски" in ru


def test_paraphrase_target_option_picks_the_answer_language() -> None:
    # target=ru on an English text: a Russian prompt that asks for a translation.
    to_ru = system(build("paraphrase", lang="en", text=EN_TEXT, options={"target": "ru"}))
    assert_prompt_language(to_ru, "ru")
    assert "переведи его на русский" in to_ru
    # target=en on a Russian text, Russian interface: an English prompt that translates.
    to_en = system(build("paraphrase", lang="ru", text=RU_TEXT, options={"target": "en"}))
    assert_prompt_language(to_en, "en")
    assert "translate it into English" in to_en
    # target=same keeps the original's language and asks for no translation.
    same = system(build("paraphrase", lang="en", text=RU_TEXT, options={"target": "same"}))
    assert_prompt_language(same, "ru")
    assert "переведи" not in same


def test_paraphrase_examples_follow_the_answer_language() -> None:
    ru = build("paraphrase", lang="en", text=RU_TEXT)
    en = build("paraphrase", lang="ru", text=EN_TEXT)
    assert all(cyrillic(m["content"]) > 10 for m in ru[1:-1])
    assert all(cyrillic(m["content"]) == 0 for m in en[1:-1])


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("lang", "text", "sentence"),
    [
        ("en", EN_TEXT, "name and number. Use a formal, businesslike tone."),
        ("ru", RU_TEXT, "имена и числа. Пиши в официальном, деловом стиле."),
    ],
)
def test_paraphrase_style_fills_its_sentence(lang: str, text: str, sentence: str) -> None:
    """The style sentence goes where {style} was: right after the task sentence."""
    neutral = system(build("paraphrase", lang=lang, text=text))
    formal = system(build("paraphrase", lang=lang, text=text, options={"style": "formal"}))
    assert sentence not in neutral
    assert sentence in formal
    friendly = system(build("paraphrase", lang=lang, text=text, options={"style": "friendly"}))
    assert sentence not in friendly and friendly != neutral


@pytest.mark.parametrize(
    ("lang", "text", "bullets", "default"),
    [
        ("en", EN_TEXT, "bullet points, each starting with '- '", "Write a few sentences."),
        (
            "ru",
            RU_TEXT,
            "коротких пунктов, каждый начинается с '- '",
            "Напиши несколько предложений.",
        ),
    ],
)
def test_summarize_format_fills_its_sentence(
    lang: str, text: str, bullets: str, default: str
) -> None:
    short = system(build("summarize", lang=lang, text=text))
    as_bullets = system(build("summarize", lang=lang, text=text, options={"format": "bullets"}))
    assert default in short and bullets not in short
    assert bullets in as_bullets and default not in as_bullets


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("paraphrase", {"style": "shouty", "target": "fr"}),
        ("paraphrase", {"style": "", "target": ""}),
        ("summarize", {"format": "poem"}),
        ("summarize", {"format": "BULLETS"}),
    ],
)
@pytest.mark.parametrize("lang", LANGS)
def test_unknown_option_values_fall_back_to_the_default(
    name: str, bad: dict[str, str], lang: str
) -> None:
    text = RU_TEXT if lang == "ru" else EN_TEXT
    assert build(name, lang=lang, text=text, options=bad) == build(name, lang=lang, text=text)
    assistant = ASSISTANTS[name]
    assert assistant.options(bad) == {g.name: g.default for g in assistant.option_groups}


def test_options_keep_valid_choices_and_ignore_unknown_groups() -> None:
    paraphrase = ASSISTANTS["paraphrase"]
    assert paraphrase.options({"style": "concise", "colour": "red"}) == {
        "style": "concise",
        "target": "same",
    }
    assert ASSISTANTS["moderate"].options({"style": "formal"}) == {}


@pytest.mark.parametrize("name", sorted(ASSISTANTS))
@pytest.mark.parametrize("lang", LANGS)
def test_no_placeholder_is_left_in_any_system_prompt(name: str, lang: str) -> None:
    """Every option combination, both languages, both text languages: no `{name}` stays
    unformatted; the only braces are the JSON template of the structured prompts."""
    assistant = ASSISTANTS[name]
    seen = set()
    for options in all_option_combinations(assistant):
        for text in (EN_TEXT, RU_TEXT):
            prompt = system(build(name, lang=lang, text=text, options=options))
            seen.add(prompt)
            templates = _JSON_TEMPLATE.findall(prompt)
            if assistant.structured:
                assert len(templates) == 1, prompt
                assert templates[0].startswith('{"label": "<'), templates[0]
                assert "{{" not in prompt and "}}" not in prompt
            else:
                assert templates == []
            rest = _JSON_TEMPLATE.sub("", prompt)
            assert "{" not in rest and "}" not in rest, prompt
    # Each combination of options gives its own prompt (no option is silently dropped),
    # except the target choices that do not apply to the answer language.
    expected = 1
    for group in assistant.option_groups:
        expected *= len(group.choices) if group.name != "target" else 2
    assert len(seen) >= expected


@pytest.mark.parametrize("name", ["moderate", "label"])
@pytest.mark.parametrize("lang", LANGS)
def test_repair_prompts_quote_the_error(name: str, lang: str) -> None:
    repair = str(ASSISTANTS[name]._prompts(lang)["repair"])
    filled = repair.format(error="confidence: Input should be less than or equal to 1")
    assert "confidence: Input should be less than or equal to 1" in filled
    assert "{" not in filled and "}" not in filled


# --------------------------------------------------------------- few-shot and history


@pytest.mark.parametrize("name", sorted(ASSISTANTS))
@pytest.mark.parametrize("lang", LANGS)
def test_message_layout(name: str, lang: str) -> None:
    """system, then few-shot user/assistant pairs, then (chat only) the history, then the
    user's text as the last message, unchanged."""
    text = RU_TEXT if lang == "ru" else EN_TEXT
    messages = build(name, lang=lang, text=text)
    assert messages[-1] == {"role": "user", "content": text}
    middle = messages[1:-1]
    assert len(middle) % 2 == 0
    for i in range(0, len(middle), 2):
        assert middle[i]["role"] == "user"
        assert middle[i + 1]["role"] == "assistant"
        assert middle[i]["content"] and middle[i + 1]["content"]
    contents = [m["content"] for m in middle]
    history_contents = [part for turn in HISTORY for part in turn]
    if name == "chat":
        assert contents[-len(history_contents) :] == history_contents
    else:
        assert not set(history_contents) & set(contents)
        assert len(middle) >= 2  # every task assistant ships at least one example
    assert [m["role"] for m in messages].count("system") == 1


def test_chat_history_comes_in_order_and_without_examples() -> None:
    messages = build("chat", lang="ru", text="И что дальше?")
    assert [m["content"] for m in messages[1:]] == [
        "earlier question one",
        "earlier answer one",
        "earlier question two",
        "answer two",
        "И что дальше?",
    ]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert build("chat", history=[])[1:] == [{"role": "user", "content": EN_TEXT}]


@pytest.mark.parametrize("name", ["moderate", "label", "summarize"])
def test_shipped_examples_are_in_the_answer_language(name: str) -> None:
    for lang, text in (("en", EN_TEXT), ("ru", RU_TEXT)):
        examples = build(name, lang=lang, text=text)[1:-1]
        users = [m["content"] for m in examples if m["role"] == "user"]
        if lang == "ru":
            assert all(cyrillic(u) > 5 for u in users), users
        else:
            assert all(cyrillic(u) == 0 for u in users), users


def test_picked_examples_replace_the_shipped_ones() -> None:
    picked = (Example("is the pool open?", '{"label": "ok"}'), Example("buy now", "spam!"))
    for name in ("paraphrase", "moderate", "label"):
        messages = build(name, context=PromptContext(examples=picked))
        assert messages[1:-1] == [
            {"role": "user", "content": "is the pool open?"},
            {"role": "assistant", "content": '{"label": "ok"}'},
            {"role": "user", "content": "buy now"},
            {"role": "assistant", "content": "spam!"},
        ]


# ------------------------------------------------------------------------- labeling


CUSTOM_LABELS = (("bug", "something is broken"), ("feature", ""), ("billing", "money, invoices"))


@pytest.mark.parametrize("lang", LANGS)
def test_label_prompt_lists_the_context_labels(lang: str) -> None:
    prompt = system(build("label", lang=lang, context=PromptContext(labels=CUSTOM_LABELS)))
    lines = prompt.splitlines()
    assert "- bug: something is broken" in lines
    assert "- feature" in lines  # no description: the name alone, no dangling colon
    assert "- billing: money, invoices" in lines
    for default_name in default_label_set().names:
        assert f"- {default_name}" not in prompt
    # The labels sit right after the "Labels:" heading, in order.
    start = lines.index("- bug: something is broken")
    assert lines[start : start + 3] == [
        "- bug: something is broken",
        "- feature",
        "- billing: money, invoices",
    ]
    assert lines[start - 1].rstrip(":") in ("Labels", "Метки")


def test_label_prompt_without_labels_lists_the_default_set() -> None:
    prompt = system(build("label"))
    for name in ("question", "complaint", "praise", "request", "other"):
        assert any(line.startswith(f"- {name}: ") for line in prompt.splitlines()), name


@pytest.mark.parametrize("lang", LANGS)
def test_label_shipped_examples_only_with_the_default_set(lang: str) -> None:
    default_context = PromptContext(labels=default_label_set().as_context())
    with_default = build("label", lang=lang, context=default_context)
    with_nothing = build("label", lang=lang)
    assert len(with_default) == len(with_nothing) >= 4
    assert with_default[1:-1] == with_nothing[1:-1]
    # A custom set: the shipped examples (complaint, question) would mislead the model.
    custom = build("label", lang=lang, context=PromptContext(labels=CUSTOM_LABELS))
    assert [m["role"] for m in custom] == ["system", "user"]


def test_label_picked_examples_are_used_with_a_custom_set() -> None:
    picked = (Example("the invoice is wrong", '{"label": "billing", "confidence": 1.0}'),)
    messages = build("label", context=PromptContext(labels=CUSTOM_LABELS, examples=picked))
    assert messages[1:-1] == [
        {"role": "user", "content": "the invoice is wrong"},
        {"role": "assistant", "content": '{"label": "billing", "confidence": 1.0}'},
    ]


# ------------------------------------------------- the shipped examples fit their schemas


def _raw_examples(name: str) -> list[tuple[str, str, str]]:
    data = yaml.safe_load((PROMPTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return [
        (lang, str(e["user"]), str(e["assistant"]))
        for lang in LANGS
        for e in data[lang].get("examples") or []
    ]


def test_moderation_examples_are_valid_verdicts() -> None:
    examples = _raw_examples("moderate")
    assert len(examples) >= 4
    labels = set()
    for lang, _user, answer in examples:
        verdict = parse_structured(answer, Verdict)
        labels.add(verdict.label.value)
        # The reason is written in the interface language, as the prompt asks.
        assert (cyrillic(verdict.reason) > 0) == (lang == "ru"), verdict.reason
    assert {"ok", "spam"} <= labels  # shows both a harmless and a harmful answer


def test_label_examples_are_valid_results_from_the_default_set() -> None:
    examples = _raw_examples("label")
    assert len(examples) >= 4
    names = set(default_label_set().names)
    for lang, _user, answer in examples:
        result = parse_structured(answer, LabelResult)
        assert result.label in names, result
        assert 0.0 < result.confidence <= 1.0
        assert (cyrillic(result.reason) > 0) == (lang == "ru"), result.reason


def test_default_label_set_file() -> None:
    spec = default_label_set()
    assert spec.names == ["question", "complaint", "praise", "request", "other"]
    assert all(label.description for label in spec.labels)


# ---------------------------------------------------------------------------- render


VERDICT = '{"label": "spam", "confidence": 0.95, "reason": "Ads for a scheme.", "action": "delete"}'


def test_moderation_render_english() -> None:
    shown = ASSISTANTS["moderate"].render(VERDICT, lang="en")
    assert shown.startswith("⛔ Spam")
    assert "95%" in shown
    assert "Ads for a scheme." in shown
    assert "Suggested action: delete" in shown
    assert "{" not in shown


def test_moderation_render_russian() -> None:
    shown = ASSISTANTS["moderate"].render(VERDICT, lang="ru")
    assert shown.startswith("⛔ Спам")
    assert "уверенность 95%" in shown
    assert "Причина: Ads for a scheme." in shown
    assert "Рекомендуемое действие: удалить" in shown


def test_moderation_render_ok_verdict_in_a_code_fence() -> None:
    answer = (
        '```json\n{"label": "ok", "confidence": 0.5, "reason": "Fine.", "action": "review"}\n```'
    )
    shown = ASSISTANTS["moderate"].render(answer, lang="ru")
    assert shown.startswith("✅ Нормально")
    assert "50%" in shown
    assert "передать модераторам" in shown


@pytest.mark.parametrize(
    "raw",
    [
        "I think this is spam.",
        '{"label": "spam", "confidence": 1.5, "reason": "x"}',  # out of range
        '{"label": "rude", "confidence": 0.5, "reason": "x"}',  # not a moderation label
        '{"label": "ok", "confidence": 0.5, "reason": "x", "mood": "calm"}',  # extra field
        '{"label": "ok", "confidence": 0.5, "reason": ""}',  # a verdict needs a reason
    ],
)
@pytest.mark.parametrize("lang", LANGS)
def test_moderation_render_invalid_shows_the_raw_text(raw: str, lang: str) -> None:
    assert ASSISTANTS["moderate"].render(raw, lang=lang) == raw


def test_label_render() -> None:
    answer = '{"label": "Question", "confidence": 0.875, "reason": "Asks how."}'
    en = ASSISTANTS["label"].render(answer, lang="en")
    ru = ASSISTANTS["label"].render(answer, lang="ru")
    assert en.splitlines() == ["🏷 question — confidence 88%", "Asks how."]
    assert ru.splitlines() == ["🏷 question — уверенность 88%", "Asks how."]
    # Without a reason: the one line only.
    bare = ASSISTANTS["label"].render('{"label": "praise", "confidence": 1}', lang="en")
    assert bare == "🏷 praise — confidence 100%"


@pytest.mark.parametrize(
    "raw",
    [
        "question",
        '{"label": "question", "confidence": 2}',
        '{"label": "question", "confidence": 0.5, "extra": true}',
        '{"confidence": 0.5}',
    ],
)
def test_label_render_invalid_shows_the_raw_text(raw: str) -> None:
    assert ASSISTANTS["label"].render(raw, lang="ru") == raw


@pytest.mark.parametrize("name", ["chat", "paraphrase", "summarize"])
def test_text_assistants_render_the_answer_as_is(name: str) -> None:
    answer = '{"label": "spam", "confidence": 0.9, "reason": "x"}'
    assert ASSISTANTS[name].render(answer, lang="ru") == answer


@pytest.mark.parametrize("name", sorted(ASSISTANTS))
@pytest.mark.parametrize("lang", LANGS)
def test_titles_and_descriptions_are_localised(name: str, lang: str) -> None:
    assistant = ASSISTANTS[name]
    title, description = assistant.title(lang), assistant.description(lang)
    assert title != f"assistant-{name}-title"
    assert description != f"assistant-{name}-description"
    if lang == "ru":
        assert cyrillic(title + description) > 0
