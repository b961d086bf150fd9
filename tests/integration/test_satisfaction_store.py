"""The satisfaction estimate's storage and scoring pass on SQLite and the real Postgres, with a
scorer object of the reward model's interface (torch is not the point here; the tiny real
reward model is in tests/training/test_answer_scores.py), its /metrics gauges and the
`loopgram satisfaction` command."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from loopgram import adapters, metrics, satisfaction
from loopgram.cli import app
from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback_many
from loopgram.models import (
    AnswerScore,
    Interaction,
    InteractionStatus,
    Rating,
)
from tests.factories import activate_reward_model, add_interaction
from training.answer_scores import score_pending

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class FakeScorer:
    """`RewardScorer.score`'s interface: the score is the answer's number of words, unless a
    test says otherwise; every call is recorded."""

    calls: list[list[str]] = field(default_factory=list)
    choke_on: str | None = None  # an answer that makes any call containing it fail
    broken: bool = False  # every call fails
    values: dict[str, float] = field(default_factory=dict)

    def score(
        self, name: str, items: Sequence[tuple[Sequence[dict[str, str]], str]]
    ) -> list[float]:
        answers = [answer for _, answer in items]
        self.calls.append(answers)
        if self.broken or (self.choke_on is not None and self.choke_on in answers):
            raise RuntimeError("the model choked")
        for prompt, _ in items:
            assert prompt and all({"role", "content"} <= set(m) for m in prompt)
        return [self.values.get(a, float(len(a.split()))) for a in answers]


@dataclass
class FakeModel:
    name: str
    scorer: FakeScorer


class Loader:
    """`training.reward.load_active`'s interface: the registry's active reward model."""

    def __init__(self, scorer: FakeScorer | None = None, fail_for: str | None = None) -> None:
        self.scorer = scorer or FakeScorer()
        self.fail_for = fail_for

    def __call__(self, db: Database, assistant: str) -> FakeModel | None:
        if assistant == self.fail_for:
            raise FileNotFoundError(f"/adapters/{assistant}-rm-v1/adapter_config.json")
        found = db.call(adapters.active_reward_model, assistant=assistant)
        return None if found is None else FakeModel(found.name, self.scorer)


def add_reward_model(db: Database, assistant: str = "chat") -> str:
    return activate_reward_model(
        db, path=f"/nowhere/{assistant}-rm", base_model="/nowhere/base", assistant=assistant
    )


def stored(db: Database, reward_model: str | None = None) -> dict[int, float]:
    def read(*, session: Any) -> dict[int, float]:
        query = select(AnswerScore)
        if reward_model is not None:
            query = query.where(AnswerScore.reward_model == reward_model)
        return {row.interaction_id: row.score for row in session.exec(query).all()}

    return db.call(read)


def press(db: Database, interaction_id: int, user_id: int, value: int) -> None:
    db.call(
        apply_feedback_many,
        feedbacks=[Feedback(interaction_id=interaction_id, user_id=user_id, value=value)],
    )


def test_scores_are_stored_once_and_a_rerun_scores_only_new_answers(db: Database) -> None:
    model = add_reward_model(db)
    sent = [
        add_interaction(db, answer=f"answer {'word ' * i}", with_messages=True) for i in range(5)
    ]
    # Not sent answers, and another assistant's: never scored with chat's reward model.
    add_interaction(db, answer="", status=InteractionStatus.failed)
    add_interaction(db, answer="")
    add_interaction(db, answer="the model broke here", status=InteractionStatus.failed)
    add_interaction(db, assistant="paraphrase", answer="not chat's")
    loader = Loader()

    (first,) = score_pending(db, load=loader)
    assert (first.assistant, first.reward_model, first.scored, first.failed) == (
        "chat",
        model,
        5,
        0,
    )
    assert first.error is None
    assert stored(db) == {iid: float(i + 1) for i, iid in enumerate(sent)}
    assert loader.scorer.calls[0][0] == "answer " + "word " * 4, "newest first"

    (again,) = score_pending(db, load=loader)
    assert again.scored == 0 and len(loader.scorer.calls) == 1, "nothing scored twice"

    newer = add_interaction(db, answer="one more")
    (third,) = score_pending(db, load=loader)
    assert third.scored == 1 and loader.scorer.calls[-1] == ["one more"]
    # Storing an existing score again (a concurrent pass) inserts nothing, changes nothing.
    assert db.call(satisfaction.store_scores, reward_model=model, scores={newer: 99.0}) == 0
    assert stored(db)[newer] == 2.0
    assert len(stored(db)) == 6


def test_a_pass_stops_at_its_cap_newest_first_and_the_next_goes_on(db: Database) -> None:
    add_reward_model(db)
    ids = [add_interaction(db, answer=f"a{i}") for i in range(7)]
    loader = Loader()
    (result,) = score_pending(db, load=loader, limit=3, batch=2)
    assert result.scored == 3 and sorted(stored(db)) == ids[-3:]
    assert [len(call) for call in loader.scorer.calls] == [2, 1]
    score_pending(db, load=loader, limit=3, batch=2)
    assert sorted(stored(db)) == ids[-6:]
    score_pending(db, load=loader, limit=3, batch=2)
    assert sorted(stored(db)) == ids


def test_a_stored_question_without_prompt_messages_is_scored_on_the_question(
    db: Database,
) -> None:
    add_reward_model(db)
    old = add_interaction(db, prompt="what is two and two?", answer="four")
    forged = add_interaction(db, prompt="hello", answer="hi")

    def corrupt(*, session: Any) -> None:
        row = session.get(Interaction, forged)
        row.prompt_messages = [{"role": 5}, "junk", {"content": "no role"}]
        session.add(row)

    db.call(corrupt)
    rows = db.call(satisfaction.unscored_answers, assistant="chat", reward_model="x", limit=10)
    prompts = {r.interaction_id: r.prompt for r in rows}
    assert prompts[old] == [{"role": "user", "content": "what is two and two?"}]
    assert prompts[forged] == [{"role": "user", "content": "hello"}]
    (result,) = score_pending(db, load=Loader())
    assert result.scored == 2


def test_a_new_reward_model_scores_everything_again_and_the_old_scores_stay(
    db: Database,
) -> None:
    first = add_reward_model(db)
    ids = [add_interaction(db, answer=f"a{i}") for i in range(3)]
    score_pending(db, load=Loader())
    second = add_reward_model(db)
    assert second != first
    (result,) = score_pending(db, load=Loader())
    assert (result.reward_model, result.scored) == (second, 3)
    assert sorted(stored(db, first)) == sorted(stored(db, second)) == ids
    estimates = db.call(satisfaction.estimate_all)
    assert estimates["chat"].reward_model == second and estimates["chat"].answers == 3


def test_per_adapter_figures_and_a_replaced_rating_counts_once(db: Database) -> None:
    add_reward_model(db)
    base = [add_interaction(db, answer="short", user_id=1) for _ in range(3)]
    tuned = [add_interaction(db, answer="a b c", adapter="chat-v2", user_id=2) for _ in range(2)]
    score_pending(db, load=Loader())
    unscored_but_rated = add_interaction(db, answer="late", user_id=3)
    db.call(
        satisfaction.store_scores, reward_model="chat-rm-v9", scores={unscored_but_rated: 1.0}
    )  # another reward model's score: not this estimate's
    press(db, base[0], 1, 1)
    press(db, base[0], 1, -1)  # changed their mind: one rating, 👎
    press(db, base[1], 1, 1)
    press(db, tuned[0], 2, 1)
    press(db, unscored_but_rated, 3, 1)

    def other_rows(*, session: Any) -> None:
        # A review decision is a moderator's verdict, not a user's 👍 / 👎: left out.
        session.add(Rating(interaction_id=tuned[1], user_id=500, value=-1, source="review"))
        # A second person's rating of one answer (a group's reactions) counts on its own.
        session.add(Rating(interaction_id=tuned[0], user_id=77, value=1, source="reaction"))

    db.call(other_rows)
    answers = db.call(satisfaction.observations, assistant="chat", reward_model="chat-rm-v1")
    assert {o.interaction_id: o.ratings for o in answers} == {
        base[0]: (-1,),
        base[1]: (1,),
        base[2]: (),
        tuned[0]: (1, 1),
        tuned[1]: (),
    }
    result = db.call(satisfaction.estimate_all)["chat"]
    assert not result.calibrated and "not enough ratings" in (result.note or "")
    assert result.adapters["base"].as_dict() == {
        "predicted": None,
        "answers": 3,
        "observed": 0.5,
        "rated": 2,
    }
    assert result.adapters["chat-v2"].as_dict() == {
        "predicted": None,
        "answers": 2,
        "observed": 1.0,
        "rated": 2,
    }
    assert (result.rated, result.thumbs_up) == (4, 3)


def _rated_history(db: Database, n: int = 40) -> list[int]:
    """n rated answers whose 👍 follows their length (the fake score), and as many unrated."""
    ids = []
    for i in range(n):
        words = 1 + i % 8
        iid = add_interaction(db, answer=" ".join(["w"] * words), user_id=1000 + i)
        press(db, iid, 1000 + i, 1 if (words > 4) != (i % 7 == 0) else -1)
        ids.append(iid)
        ids.append(add_interaction(db, answer=" ".join(["w"] * words), adapter="chat-v1"))
    return ids


def test_enough_ratings_give_a_calibrated_estimate(db: Database) -> None:
    add_reward_model(db)
    _rated_history(db)
    score_pending(db, load=Loader())
    result = db.call(satisfaction.estimate_all, assistant="chat")["chat"]
    assert result.calibrated and result.rated == 40
    base, tuned = result.adapters["base"], result.adapters["chat-v1"]
    assert (base.answers, base.rated, tuned.answers, tuned.rated) == (40, 40, 40, 0)
    assert tuned.observed is None and tuned.predicted is not None
    # Same answers, so the same predicted rate; close to the observed one of the rated twins.
    assert tuned.predicted == pytest.approx(base.predicted)
    assert base.predicted == pytest.approx(base.observed, abs=0.1)
    assert result.ece is not None and result.brier is not None and result.brier < 0.25
    assert db.call(satisfaction.estimate_all, assistant="paraphrase") == {}


def test_a_reward_model_that_cannot_be_loaded_skips_its_assistant_and_loses_nothing(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    add_reward_model(db, "chat")
    add_reward_model(db, "paraphrase")
    chat = add_interaction(db, answer="chat answer")
    press(db, chat, 7, 1)
    para = add_interaction(db, assistant="paraphrase", answer="rewritten text")
    results = score_pending(db, load=Loader(fail_for="chat"))
    by_name = {r.assistant: r for r in results}
    assert by_name["chat"].scored == 0
    assert by_name["chat"].error is not None and "FileNotFoundError" in by_name["chat"].error
    assert by_name["paraphrase"].scored == 1 and by_name["paraphrase"].error is None
    assert stored(db) == {para: 2.0}
    assert "satisfaction.load_failed assistant=chat" in caplog.text
    count = db.call(lambda *, session: session.exec(select(func.count()).select_from(Rating)).one())
    assert count == 1 and db.call(lambda *, session: session.get(Interaction, chat)) is not None
    # Once it loads again, the answer left behind is scored.
    score_pending(db, load=Loader())
    assert stored(db)[chat] == 2.0


def test_an_answer_the_model_chokes_on_costs_only_itself(db: Database) -> None:
    add_reward_model(db)
    good = [add_interaction(db, answer=f"fine {i}") for i in range(3)]
    bad = add_interaction(db, answer="BOOM")
    scorer = FakeScorer(choke_on="BOOM", values={"fine 1": math.nan})
    (result,) = score_pending(db, load=Loader(scorer))
    assert (result.scored, result.failed) == (2, 1)  # NaN is not stored either
    assert sorted(stored(db)) == [good[0], good[2]]
    (again,) = score_pending(db, load=Loader(scorer))
    assert (again.scored, again.failed) == (0, 1) and bad not in stored(db)


def test_a_model_that_scores_nothing_ends_its_pass_at_the_first_batch(db: Database) -> None:
    add_reward_model(db)
    for i in range(10):
        add_interaction(db, answer=f"a{i}")
    scorer = FakeScorer(broken=True)
    (result,) = score_pending(db, load=Loader(scorer), batch=4)
    assert result.scored == 0 and result.failed == 4
    assert result.error == "the reward model scored none of 4 answers"
    assert len(scorer.calls) == 5  # the batch, then each of its answers alone; no more


def test_no_reward_model_means_no_pass_and_no_estimate(db: Database) -> None:
    add_interaction(db, answer="something")
    assert score_pending(db, load=Loader()) == []
    assert db.call(satisfaction.estimate_all) == {}


def test_metrics_show_the_predicted_rate_and_calibration_error(db: Database) -> None:
    add_reward_model(db)
    _rated_history(db)
    score_pending(db, load=Loader())
    estimates = db.call(satisfaction.estimate_all)
    collector = metrics.DatabaseCollector(cache_seconds=0)
    collector.use_database(db)
    names = {
        (m.name, tuple(sorted(s.labels.items()))): s.value
        for m in collector.collect()
        for s in m.samples
    }
    key = ("loopgram_predicted_thumbs_up_rate", (("adapter", "chat-v1"), ("assistant", "chat")))
    assert names[key] == pytest.approx(estimates["chat"].adapters["chat-v1"].predicted)
    ece = names[("loopgram_satisfaction_calibration_error", (("assistant", "chat"),))]
    assert ece == pytest.approx(estimates["chat"].ece)
    # Published by /stats: the process-wide /metrics text carries it.
    metrics.use_database(db)
    metrics.publish_satisfaction(estimates)
    try:
        text = metrics.render().decode()
    finally:
        metrics.use_database(None)
    assert 'loopgram_predicted_thumbs_up_rate{adapter="base",assistant="chat"}' in text
    assert 'loopgram_satisfaction_calibration_error{assistant="chat"}' in text


# ----------------------------------------------------------------------------- the command


def _cli(url: str, *args: str) -> tuple[int, str, str]:
    # The command sets up logging on the runner's stream, closed once it returns: put the
    # test's handlers back so later log lines do not write to a closed stream.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": url, "COLUMNS": "200"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


def test_satisfaction_command_json_plot_and_table(db: Database, url: str, tmp_path: Path) -> None:
    add_reward_model(db)
    _rated_history(db)
    score_pending(db, load=Loader())
    plot = tmp_path / "calibration.png"
    code, out, err = _cli(url, "satisfaction", "--json", "--plot", str(plot))
    assert code == 0, err
    document = json.loads(out)
    chat = document["chat"]
    assert chat["reward_model"] == "chat-rm-v1"
    assert set(chat["adapters"]) == {"base", "chat-v1"}
    assert chat["adapters"]["base"]["answers"] == 40 and chat["adapters"]["base"]["rated"] == 40
    assert 0 < chat["adapters"]["base"]["predicted"] < 1
    assert chat["adapters"]["chat-v1"]["observed"] is None
    assert 0 <= chat["ece"] <= 1 and 0 <= chat["brier"] <= 1
    assert sum(b["count"] for b in chat["calibration"]) == 40
    assert len(chat["calibration"]) == satisfaction.BINS
    assert plot.read_bytes().startswith(PNG_MAGIC)

    code, out, err = _cli(url, "satisfaction")
    assert code == 0, err
    assert "chat — reward model chat-rm-v1" in out and "chat-v1" in out and "Brier" in out


def test_satisfaction_command_says_what_is_missing(db: Database, url: str) -> None:
    code, out, err = _cli(url, "satisfaction", "--json")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: no active reward model for any assistant: train one with "
        "`loopgram train --method reward`"
    ]
    code, _, err = _cli(url, "satisfaction", "--assistant", "summarize")
    assert code == 2 and "no active reward model for summarize" in err
    assert "loopgram train --assistant summarize --method reward" in err
    add_reward_model(db)
    add_interaction(db, answer="not scored yet")
    code, _, err = _cli(url, "satisfaction")
    assert code == 2 and err.startswith("error: no answers scored yet")
    assert len(err.strip().splitlines()) == 1


def test_satisfaction_command_with_too_few_ratings_says_so(db: Database, url: str) -> None:
    add_reward_model(db)
    iid = add_interaction(db, answer="scored", user_id=5)
    press(db, iid, 5, 1)
    score_pending(db, load=Loader())
    code, out, err = _cli(url, "satisfaction", "--json")
    assert code == 0, err
    chat = json.loads(out)["chat"]
    assert chat["adapters"]["base"] == {
        "predicted": None,
        "answers": 1,
        "observed": 1.0,
        "rated": 1,
    }
    assert chat["brier"] is None and chat["calibration"] == []
    assert "not enough ratings to calibrate" in chat["note"]
