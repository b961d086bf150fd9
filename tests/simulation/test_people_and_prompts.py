"""Simulated behaviour follows the taste (up to noise); the prompt split never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.simulation.control import shuffled_rows
from bot.simulation.people import Action, Behaviour, Person
from bot.simulation.preferences import Judgement
from bot.simulation.prompts import PromptSetError, load_prompt_set

LIKED = Judgement(True, 1.0, "concise")
DISLIKED = Judgement(False, -1.0, "chatter")
NEVER_REGENERATE = {"regenerate_when_liked": 0.0, "regenerate_when_disliked": 0.0}


def test_without_noise_presses_follow_the_taste() -> None:
    person = Person(1, "en", Behaviour(noise=0.0, rate_share=1.0, **NEVER_REGENERATE), seed=3)
    assert {person.react(LIKED) for _ in range(50)} == {Action.up}
    assert {person.react(DISLIKED) for _ in range(50)} == {Action.down}
    assert all(person.prefers_first(LIKED, DISLIKED) for _ in range(50))


def test_noise_flips_about_its_share_of_presses() -> None:
    person = Person(1, "en", Behaviour(noise=0.3, rate_share=1.0, **NEVER_REGENERATE), seed=3)
    downs = sum(person.react(LIKED) == Action.down for _ in range(2000))
    assert 0.25 < downs / 2000 < 0.35


def test_disliked_answers_are_regenerated_more_often() -> None:
    person = Person(1, "en", Behaviour(), seed=5)
    liked = sum(person.react(LIKED) == Action.regenerate for _ in range(2000))
    disliked = sum(person.react(DISLIKED) == Action.regenerate for _ in range(2000))
    assert disliked > 3 * liked


def test_same_seed_same_behaviour() -> None:
    def presses(seed: int) -> list[Action]:
        person = Person(9, "ru", Behaviour(noise=0.2), seed=seed)
        return [person.react(LIKED) for _ in range(100)]

    assert presses(1) == presses(1)
    assert presses(1) != presses(2)


def test_behaviour_rejects_probabilities_outside_0_1() -> None:
    with pytest.raises(ValueError, match="noise"):
        Behaviour(noise=1.5)


def test_split_is_disjoint_deterministic_and_bilingual() -> None:
    prompts = load_prompt_set(assistants=["paraphrase", "summarize"], languages=["en", "ru"])
    again = load_prompt_set(assistants=["paraphrase", "summarize"], languages=["en", "ru"])
    assert prompts == again
    train = {(p.assistant, p.lang, p.text) for p in prompts.train}
    heldout = {(p.assistant, p.lang, p.text) for p in prompts.heldout}
    assert train and heldout and not train & heldout
    assert {(a, lang) for a, lang, _ in heldout} == {
        (a, lang) for a in ("paraphrase", "summarize") for lang in ("en", "ru")
    }
    other = load_prompt_set(assistants=["paraphrase"], languages=["en"], seed=1)
    assert {p.text for p in other.heldout} != {
        p.text for p in prompts.heldout if p.assistant == "paraphrase" and p.lang == "en"
    }


def test_canary_prompts_are_fresh_and_each_round_has_its_own() -> None:
    prompts = load_prompt_set(assistants=["paraphrase", "summarize"], languages=["en", "ru"])
    seen = {(p.assistant, p.lang, p.text) for p in prompts.train + prompts.heldout}
    canary = [(p.assistant, p.lang, p.text) for p in prompts.canary]
    assert canary and not seen & set(canary) and len(set(canary)) == len(canary)
    pools = [{(p.assistant, p.lang, p.text) for p in prompts.canary_pool(r, 3)} for r in (1, 2, 3)]
    assert not pools[0] & pools[1] and not pools[1] & pools[2] and not pools[0] & pools[2]
    assert set().union(*pools) == set(canary)
    groups = {(a, lang) for a in ("paraphrase", "summarize") for lang in ("en", "ru")}
    assert all({(a, lang) for a, lang, _ in pool} == groups for pool in pools)
    english = [p for p in prompts.canary if (p.assistant, p.lang) == ("paraphrase", "en")]
    assert len([p for p in prompts.canary_pool(1, 3) if p in english]) == len(english) // 3
    assert {p.text for p in prompts.canary_pool(1, 1)} == {p.text for p in prompts.canary}


def test_a_round_without_enough_canary_prompts_takes_them_in_turn_or_falls_back(
    tmp_path: Path,
) -> None:
    traffic = tmp_path / "prompts.yaml"
    traffic.write_text("paraphrase:\n  en: [a, b, c, d, e, f, g, h]\n", encoding="utf-8")
    fresh = tmp_path / "canary.yaml"
    fresh.write_text("paraphrase:\n  en: [x, y]\n", encoding="utf-8")
    prompts = load_prompt_set(
        assistants=["paraphrase"], languages=["en"], path=traffic, canary_path=fresh
    )
    assert [len(prompts.canary_pool(r, 3)) for r in (1, 2, 3)] == [1, 1, 1]
    assert {prompts.canary_pool(r, 3)[0].text for r in (1, 2)} == {"x", "y"}
    # Own prompts without canary prompts: the canary asks the traffic prompts, as before.
    own = load_prompt_set(assistants=["paraphrase"], languages=["en"], path=traffic)
    assert own.canary == [] and own.canary_pool(2, 3) == own.train


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ("paraphrase:\n  en: [x, a]\n", "also traffic or held-out prompts, e.g. 'a'"),
        ("[not, a, mapping]\n", "must map assistants to languages"),
        ("paraphrase: {en: [x\n", "cannot read the prompt set"),
    ],
)
def test_bad_canary_prompts_are_clear_errors(tmp_path: Path, canary: str, message: str) -> None:
    traffic = tmp_path / "prompts.yaml"
    traffic.write_text("paraphrase:\n  en: [a, b, c, d]\n", encoding="utf-8")
    fresh = tmp_path / "canary.yaml"
    fresh.write_text(canary, encoding="utf-8")
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(
            assistants=["paraphrase"], languages=["en"], path=traffic, canary_path=fresh
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"assistants": ["paraphrase"], "languages": ["de"]}, "unknown languages"),
        ({"assistants": ["moderate"], "languages": ["en"]}, "no prompts for 'moderate'"),
    ],
)
def test_bad_prompt_requests_are_clear_errors(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(**kwargs)  # type: ignore[arg-type]


def test_broken_prompt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.yaml"
    path.write_text("paraphrase:\n  en: [one, two]\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match="too few en prompts"):
        load_prompt_set(assistants=["paraphrase"], languages=["en"], path=path)


def test_shuffled_control_keeps_the_data_and_scrambles_the_order() -> None:
    rows = [
        {"prompt": [{"role": "user", "content": str(i)}], "chosen": [i], "rejected": [-i]}
        for i in range(1, 401)
    ]
    shuffled = shuffled_rows(rows, seed=0)
    assert shuffled == shuffled_rows(rows, seed=0)
    swapped = sum(
        row["chosen"] != original["chosen"] for row, original in zip(shuffled, rows, strict=True)
    )
    assert 160 < swapped < 240
    assert all(
        {tuple(r["chosen"]), tuple(r["rejected"])} == {tuple(o["chosen"]), tuple(o["rejected"])}
        for r, o in zip(shuffled, rows, strict=True)
    )
