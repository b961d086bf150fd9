"""Best-of-n on the real databases (SQLite and Postgres): candidates and the machine-labelled
pair stored with the interaction, datasets that use the pair only with `reward_pairs`, and
/forget + /export_me covering the candidates."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlmodel import select

from loopgram import privacy
from loopgram.best_of_n import (
    PAIR_WEIGHT,
    BestOfNResult,
    Candidate,
    RewardModelLookup,
    add_interaction_with_candidates,
    choose,
)
from loopgram.db import Database
from loopgram.models import (
    AdapterKind,
    AnswerCandidate,
    AnswerScore,
    Interaction,
    PairSource,
    PreferencePair,
)
from training.config import TrainConfig
from training.datasets import buffer_counts, build_kto_dataset, build_preference_dataset

ASKER = 4242
TEXTS = ["A fine answer.", "The best answer.", "A rambling, long and winding answer."]


def _result(rewards: list[float] | None) -> BestOfNResult:
    chosen, pair = choose(TEXTS, rewards)
    return BestOfNResult(
        candidates=tuple(
            Candidate(i, text, None if rewards is None else rewards[i])
            for i, text in enumerate(TEXTS)
        ),
        chosen=chosen,
        reward_model=None if rewards is None else "paraphrase-rm-v1",
        pair=pair,
    )


def _store(
    db: Database,
    result: BestOfNResult,
    prompt: str = "Rewrite this, please.",
    answer: str | None = None,
) -> int:
    interaction = Interaction(
        chat_id=ASKER,
        user_id=ASKER,
        assistant="paraphrase",
        prompt=prompt,
        prompt_messages=[
            {"role": "system", "content": "You rewrite texts."},
            {"role": "user", "content": prompt},
        ],
        answer=result.text if answer is None else answer,
        model="loopgram-base",
    )
    stored = db.call(add_interaction_with_candidates, interaction=interaction, result=result)
    assert stored.id is not None
    return stored.id


def _all(db: Database, model: Any) -> list[Any]:
    return db.call(lambda *, session: list(session.exec(select(model)).all()))


def test_candidates_and_the_pair_are_stored_with_the_interaction(db: Database) -> None:
    iid = _store(db, _result([0.2, 1.4, -0.9]))
    (interaction,) = _all(db, Interaction)
    assert interaction.answer == "The best answer."
    candidates = sorted(_all(db, AnswerCandidate), key=lambda c: c.position)
    assert [(c.position, c.text, c.reward, c.chosen) for c in candidates] == [
        (0, TEXTS[0], 0.2, False),
        (1, TEXTS[1], 1.4, True),
        (2, TEXTS[2], -0.9, False),
    ]
    assert {c.reward_model for c in candidates} == {"paraphrase-rm-v1"}
    assert {c.interaction_id for c in candidates} == {iid}
    (pair,) = _all(db, PreferencePair)
    assert pair.source == PairSource.best_of_n and pair.pair_key == f"best_of_n:{iid}"
    assert (pair.chosen, pair.rejected) == (TEXTS[1], TEXTS[2])
    assert (pair.chosen_interaction_id, pair.rejected_interaction_id) == (iid, None)
    assert pair.weight == PAIR_WEIGHT and pair.user_id == ASKER
    assert pair.prompt == "Rewrite this, please."


def test_the_sent_answers_reward_is_its_satisfaction_score(db: Database) -> None:
    """The reward model already scored the answer it picked: the satisfaction pass finds it
    scored and does not score it again; unscored answers are left to that pass."""
    from loopgram.satisfaction import unscored_answers

    picked = _store(db, _result([0.2, 1.4, -0.9]))
    unscored = _store(db, _result(None), prompt="Another one.")
    (score,) = _all(db, AnswerScore)
    assert (score.interaction_id, score.reward_model, score.score) == (
        picked,
        "paraphrase-rm-v1",
        1.4,
    )
    pending = db.call(
        unscored_answers, assistant="paraphrase", reward_model="paraphrase-rm-v1", limit=10
    )
    assert [a.interaction_id for a in pending] == [unscored]


def test_a_sent_answer_that_differs_from_its_candidate_is_left_to_the_scoring_pass(
    db: Database,
) -> None:
    """The reward was for the candidate's text; an answer stored in another form (trimmed,
    withheld) gets its own score from the satisfaction pass."""
    _store(db, _result([0.2, 1.4, -0.9]), answer="The best answer, trimmed.")
    assert _all(db, AnswerScore) == []


def test_no_pair_when_unscored_or_too_close(db: Database) -> None:
    unscored = _store(db, _result(None))
    close = _store(db, _result([0.1, 0.3, 0.2]), prompt="Another one.")
    assert _all(db, PreferencePair) == []
    rows = _all(db, AnswerCandidate)
    assert len(rows) == 6
    by_interaction = {(r.interaction_id, r.position): r for r in rows}
    assert by_interaction[(unscored, 0)].chosen and by_interaction[(unscored, 0)].reward is None
    assert by_interaction[(unscored, 0)].reward_model is None
    assert by_interaction[(close, 1)].chosen and by_interaction[(close, 1)].reward == 0.3


def test_a_failed_write_stores_nothing(db: Database) -> None:
    """Candidates, pair and interaction are one transaction: a clash loses all of them."""
    result = _result([0.2, 1.4, -0.9])
    broken = BestOfNResult(
        candidates=(*result.candidates, Candidate(1, "a second position 1", 0.0)),
        chosen=1,
        reward_model="paraphrase-rm-v1",
        pair=result.pair,
    )
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        _store(db, broken)
    assert _all(db, Interaction) == [] and _all(db, AnswerCandidate) == []
    assert _all(db, PreferencePair) == []


def test_datasets_use_best_of_n_pairs_only_with_reward_pairs(db: Database) -> None:
    assert TrainConfig().reward_pairs is False  # machine labels are opt-in
    _store(db, _result([0.2, 1.4, -0.9]))

    def preference(**options: Any) -> list[Any]:
        return db.call(build_preference_dataset, assistant="paraphrase", **options)

    assert preference() == []
    (example,) = preference(reward_pairs=True)
    assert example.source == "best_of_n" and example.weight == PAIR_WEIGHT
    assert example.chosen["content"] == TEXTS[1] and example.rejected["content"] == TEXTS[2]
    # The prompt the model was sent (system prompt included), as for every stored pair.
    assert example.prompt[0] == {"role": "system", "content": "You rewrite texts."}

    assert db.call(build_kto_dataset, assistant="paraphrase") == []
    sides = db.call(build_kto_dataset, assistant="paraphrase", reward_pairs=True)
    assert {(e.completion["content"], e.label) for e in sides} == {
        (TEXTS[1], True),
        (TEXTS[2], False),
    }
    # One pair per answer while best-of-n is on: not new feedback from people.
    assert db.call(buffer_counts, assistant="paraphrase")["new_pairs"] == 0


def test_forget_and_export_cover_the_candidates(db: Database) -> None:
    mine = _store(db, _result([0.2, 1.4, -0.9]))
    out = io.StringIO()
    db.call(privacy.write_user_export, user_id=ASKER, out=out)
    exported = json.loads(out.getvalue())
    assert [
        (c["interaction_id"], c["position"], c["chosen"]) for c in exported["answer_candidates"]
    ] == [(mine, 0, False), (mine, 1, True), (mine, 2, False)]
    assert exported["answer_candidates"][1]["text"] == TEXTS[1]
    assert exported["answer_candidates"][1]["reward"] == 1.4

    report = db.call(privacy.forget_user, user_id=ASKER)
    assert report.interactions == 1 and report.candidates == 3 and report.pairs_deleted == 1
    assert _all(db, AnswerCandidate) == [] and _all(db, PreferencePair) == []
    assert _all(db, AnswerScore) == []  # the sent answer's reward goes with it


def test_active_reward_model_lookup_is_cached(db: Database, tmp_path: Any) -> None:
    from loopgram import adapters

    lookup = RewardModelLookup(cache_seconds=60)
    assert db.call(lookup.active, assistant="paraphrase") is None

    def register(*, session: Any) -> str:
        row = adapters.register(
            session=session,
            assistant="paraphrase",
            path=str(tmp_path / "rm"),
            base_model="/models/base",
            method="reward",
            kind=AdapterKind.reward,
        )
        adapters.activate_reward_model(session=session, name=row.name)
        return row.name

    name = db.call(register)
    assert db.call(lookup.active, assistant="paraphrase") is None  # cached for 60 s
    lookup.invalidate()
    found = db.call(lookup.active, assistant="paraphrase")
    assert found is not None and (found.name, found.base_model) == (name, "/models/base")
    assert found.path == str(tmp_path / "rm")


def test_plan_needs_n_above_one_an_active_reward_model_and_prose(
    db: Database, tmp_path: Any
) -> None:
    from loopgram import adapters
    from loopgram.best_of_n import BestOfN
    from loopgram.llm import LLMClient
    from loopgram.reward_client import RewardClient
    from loopgram.settings import LLMSettings, RewardSettings

    service = BestOfN(
        settings=RewardSettings(best_of_n={"paraphrase": 4, "moderate": 3}),
        llm=LLMClient(LLMSettings(llm_base_url="http://127.0.0.1:9/v1")),
        rewards=RewardClient("http://127.0.0.1:9/v1"),
        cache_seconds=0,
    )

    def plan(assistant: str, structured: bool = False) -> Any:
        return db.call(service.plan, assistant=assistant, structured=structured)

    assert plan("paraphrase") is None  # no reward model yet: the usual streamed answer

    def register(*, session: Any) -> None:
        for assistant in ("paraphrase", "moderate", "chat"):
            row = adapters.register(
                session=session,
                assistant=assistant,
                path=str(tmp_path / assistant),
                base_model="/models/base",
                method="reward",
                kind=AdapterKind.reward,
            )
            adapters.activate_reward_model(session=session, name=row.name)

    db.call(register)
    found = plan("paraphrase")
    assert found is not None and found.n == 4
    assert found.reward_model.name == "paraphrase-rm-v1"
    assert plan("chat") is None, "BEST_OF_N does not name chat: off"
    assert plan("moderate", structured=True) is None, "verdicts are not ranked by reward"
    service._resting_until = float("inf")  # a reward server that just failed
    assert plan("paraphrase") is None


def test_training_runs_take_best_of_n_pairs_only_when_asked_and_never_judge_on_them(
    db: Database,
) -> None:
    from training.pipeline import dataset_for

    prompts = [f"Rewrite sentence number {i}, please." for i in range(40)]
    for i, prompt in enumerate(prompts):
        _store(db, _result([0.1 * i, 1.0 + 0.1 * i, -1.0]), prompt=prompt)

    def sizes(**options: Any) -> tuple[int, int]:
        train, held_out, _ids = db.call(dataset_for, config=TrainConfig(**options))
        return len(train), len(held_out)

    assert sizes(assistant="paraphrase") == (0, 0)
    train, held_out = sizes(assistant="paraphrase", reward_pairs=True)
    # The split puts some questions on the held-out side; their machine labels are dropped
    # there, so the gate never grades against the reward model's own opinion.
    assert 0 < train < len(prompts) and held_out == 0
    # ORPO uses them like DPO; a reward model never learns from what it labelled.
    assert sizes(assistant="paraphrase", method="orpo", reward_pairs=True)[0] == train
    assert sizes(assistant="paraphrase", method="reward", reward_pairs=True) == (0, 0)
