"""The hidden taste: concise paraphrases, short bullet summaries, nothing off the source."""

from __future__ import annotations

import pytest

from bot.simulation.preferences import bullet_lines, judge, source_coverage

SOURCE = "The new library opens at nine in the morning and closes at eight in the evening."


def test_concise_faithful_rewrite_is_liked() -> None:
    verdict = judge("paraphrase", SOURCE, "The library opens at nine and closes at eight evenings.")
    assert verdict.liked and verdict.why == "concise"


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "empty"),
        ("Cats are wonderful pets for small flats.", "ignores the source"),
        (SOURCE.upper(), "a copy"),
        ("Here is the rewritten text: the library opens at nine, closes at eight.", "chatter"),
        (
            "The brand new library opens its doors at nine in the morning every day and then "
            "closes them again at eight in the evening, which is quite late.",
            "longer than the original",
        ),
    ],
)
def test_faults_are_disliked(answer: str, why: str) -> None:
    verdict = judge("paraphrase", SOURCE, answer)
    assert not verdict.liked
    assert verdict.why == why


def test_shorter_concise_rewrite_scores_higher() -> None:
    short = judge("paraphrase", SOURCE, "Library hours: nine morning to eight evening.")
    longer = judge(
        "paraphrase", SOURCE, "The new library opens at nine in the morning, closes at eight."
    )
    assert short.liked and longer.liked
    assert short.score > longer.score


LONG = (
    "The city library announced a renovation that will start in March and last about six "
    "months. During this time the main reading room will be closed, but the children's "
    "section and the computer room will stay open in the east wing. The renovation costs "
    "2.4 million euros and will add a cafe."
)


def test_short_bullet_summary_is_liked_and_prose_is_not() -> None:
    bullets = (
        "- Renovation from March, six months\n- Reading room closed\n- Costs 2.4 million euros"
    )
    prose = "The library renovation starts in March and lasts six months; it costs 2.4 million."
    assert bullet_lines(bullets) == 3
    assert judge("summarize", LONG, bullets).liked
    verdict = judge("summarize", LONG, prose)
    assert not verdict.liked and verdict.why == "not a bullet list"


def test_coverage_matches_inflected_russian_words() -> None:
    source = "Новая библиотека открыта по будням с девяти утра"
    assert source_coverage(source, "Библиотеку открывают по будням в девять утра") >= 0.5


def test_unknown_assistant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no simulated preference"):
        judge("moderate", SOURCE, "ok")


def test_a_moderators_correction_is_what_people_like() -> None:
    from bot.simulation.moderators import correction

    source = "The meeting has been moved to Thursday because the director is away on Monday."
    chatty = (
        "Here is the rewritten text: Since the director is away on Monday, the meeting "
        "moved to Thursday. I hope this helps you plan the week ahead of the meeting."
    )
    fixed = correction("paraphrase", source, chatty)
    assert fixed is not None and judge("paraphrase", source, fixed).liked
    assert not fixed.lower().startswith("here is")
    long_source = (
        "The city council approved a budget of 4.2 million for road repairs on Tuesday. "
        "Work on the three busiest streets starts in May and should end by October. "
        "Residents will be notified a week before their street closes. "
        "The mayor said the repairs were overdue after a hard winter."
    )
    summary = correction("summarize", long_source, "A plain paragraph that is not a list.")
    assert summary is not None and summary.startswith("- ")
    assert judge("summarize", long_source, summary).liked
    # An answer that ignores the source (or merely copies it) cannot be edited into a good one.
    assert correction("paraphrase", source, "I like turtles.") is None
    assert correction("paraphrase", source, "Here is the rewritten text: " + source) is None
    assert correction("label", source, "x") is None
