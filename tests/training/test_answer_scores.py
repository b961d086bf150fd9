"""The satisfaction estimate's scoring pass with a real (tiny) reward model: scores stored as
the scorer gives them, a missing or broken reward-model folder, and the Celery task through a
real worker on the `training` queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from sqlmodel import func, select

from loopgram import satisfaction
from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback_many
from loopgram.models import AnswerScore, Interaction, Rating
from loopgram.settings import DatabaseSettings
from tests.factories import activate_reward_model, add_interaction
from tests.training.conftest import CONCISE, RAMBLING, pair_rows
from training import reward
from training.answer_scores import score_pending
from training.config import TrainConfig
from training.reward import RewardScorer, train_reward_model
from workers import context
from workers.celery_app import create_celery

FAST = {"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "max_length": 96, "lora_r": 8}


@pytest.fixture(scope="module")
def reward_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model that learned to prefer the concise answer."""
    folder = tmp_path_factory.mktemp("rm") / "chat-rm-v1"
    config = TrainConfig(method="reward", **FAST)  # type: ignore[arg-type]
    return train_reward_model(
        config, pair_rows(24), model_path=tiny_model, output_dir=folder
    ).adapter_path


@pytest.fixture(autouse=True)
def _fresh_scorers() -> Iterator[None]:
    reward.clear_cache()
    yield
    reward.clear_cache()


def activate(db: Database, path: Path, base_model: Path, assistant: str = "chat") -> str:
    return activate_reward_model(
        db, path=str(path), base_model=str(base_model), assistant=assistant
    )


def asked(db: Database, i: int, answer: str, **fields: Any) -> int:
    """An answered question as the bot stores it (the prompt messages the model was sent)."""
    return add_interaction(
        db, prompt=f"Question number {5000 + i}: can you help?", answer=answer, **fields
    )


def scores(db: Database) -> dict[int, float]:
    return db.call(
        lambda *, session: {
            s.interaction_id: s.score for s in session.exec(select(AnswerScore)).all()
        }
    )


def test_the_reward_model_scores_every_sent_answer_and_the_estimate_follows(
    sqlite_db: Database, tiny_model: Path, reward_model: Path
) -> None:
    db = sqlite_db
    name = activate(db, reward_model, tiny_model)
    concise, rambling = [], []
    for i in range(30):
        concise.append(
            asked(db, i, CONCISE, user_id=100 + i, adapter="chat-v1", with_messages=True)
        )
        rambling.append(asked(db, i, RAMBLING, user_id=200 + i, with_messages=True))
    # People like the concise answer, mostly (a few 👎 keep the fit from certainty).
    feedbacks = [
        Feedback(interaction_id=iid, user_id=100 + i, value=-1 if i % 6 == 0 else 1)
        for i, iid in enumerate(concise[:24])
    ] + [
        Feedback(interaction_id=iid, user_id=200 + i, value=1 if i % 6 == 0 else -1)
        for i, iid in enumerate(rambling[:24])
    ]
    db.call(apply_feedback_many, feedbacks=feedbacks)

    (result,) = score_pending(db, batch=16)
    assert (result.reward_model, result.scored, result.failed, result.error) == (name, 60, 0, None)
    stored = scores(db)
    assert set(stored) == {*concise, *rambling}
    assert min(stored[i] for i in concise) > max(stored[i] for i in rambling)
    # Exactly what the scorer gives for the stored prompt and answer.
    direct = RewardScorer(tiny_model)
    direct.add(name, reward_model)
    row = db.call(lambda *, session: session.get(Interaction, concise[3]))
    (expected,) = direct.score(name, [(row.prompt_messages, row.answer)])
    assert stored[concise[3]] == pytest.approx(expected, abs=1e-4)

    estimate = db.call(satisfaction.estimate_all)["chat"]
    assert estimate.calibrated and estimate.rated == 48
    tuned, base = estimate.adapters["chat-v1"], estimate.adapters["base"]
    assert tuned.answers == base.answers == 30
    assert tuned.predicted is not None and base.predicted is not None
    assert tuned.predicted > 0.7 > 0.3 > base.predicted
    assert tuned.observed == pytest.approx(20 / 24) and base.observed == pytest.approx(4 / 24)
    assert (score_pending(db)[0].scored, len(scores(db))) == (0, 60)


def test_a_missing_or_broken_reward_model_folder_is_skipped_and_nothing_is_lost(
    sqlite_db: Database, tiny_model: Path, reward_model: Path, tmp_path: Path
) -> None:
    db = sqlite_db
    activate(db, tmp_path / "gone", tiny_model, assistant="chat")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json", encoding="utf-8")
    activate(db, broken, tiny_model, assistant="summarize")
    activate(db, reward_model, tiny_model, assistant="paraphrase")
    chat = asked(db, 1, CONCISE, user_id=1)
    db.call(apply_feedback_many, feedbacks=[Feedback(interaction_id=chat, user_id=1, value=1)])
    summary = asked(db, 2, CONCISE, assistant="summarize")
    para = asked(db, 3, CONCISE, assistant="paraphrase")

    results = {r.assistant: r for r in score_pending(db)}
    assert results["chat"].scored == 0 and results["chat"].error
    assert results["summarize"].scored == 0 and results["summarize"].error
    assert (results["paraphrase"].scored, results["paraphrase"].error) == (1, None)
    assert set(scores(db)) == {para}

    def kept(*, session: Any) -> tuple[int, int]:
        return (
            session.exec(select(func.count()).select_from(Interaction)).one(),
            session.exec(select(func.count()).select_from(Rating)).one(),
        )

    assert db.call(kept) == (3, 1)
    assert summary not in scores(db)
    # The estimate of an assistant whose model cannot load is "no data", not an error.
    assert db.call(satisfaction.estimate_all, assistant="chat")["chat"].answers == 0


@pytest.mark.integration
def test_the_scoring_task_runs_on_the_training_queue_of_a_real_worker(  # type: ignore[no-untyped-def]
    pg_url: str, redis_url: str, settings_factory, tiny_model: Path, reward_model: Path
) -> None:
    settings = settings_factory(DATABASE_URL=pg_url, REDIS_URL=redis_url)
    db = Database.from_settings(DatabaseSettings(database_url=pg_url))
    context.use_database(db)
    try:
        activate(db, reward_model, tiny_model)
        ids = [asked(db, i, CONCISE if i % 2 else RAMBLING) for i in range(6)]
        app = create_celery(settings)
        assert app.conf.beat_schedule["score-answers"]["task"] == "loopgram.score_answers"
        assert app.amqp.router.route({}, "loopgram.score_answers")["queue"].name == "training"
        with start_worker(
            app, pool="solo", perform_ping_check=False, loglevel="WARNING", queues=["training"]
        ):
            app.send_task("loopgram.score_answers")  # routed: never the bot's worker
            deadline = time.monotonic() + 120
            while len(scores(db)) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert sorted(scores(db)) == ids
    finally:
        context.use_database(None)
        db.dispose()


def test_the_embedded_beat_schedules_scoring_for_the_training_worker(
    sqlite_db: Database,
    sqlite_url: str,
    settings_factory: Any,
    tiny_model: Path,
    reward_model: Path,
    tmp_path: Path,
) -> None:
    """Without Redis: beat (in the bot's process) sends the pass through the file-system
    broker to the `training` queue, where the training worker scores the answers."""
    from workers.embedded import EmbeddedWorker

    settings = settings_factory(
        DATABASE_URL=sqlite_url, DATA_DIR=str(tmp_path), SATISFACTION_CHECK_SECONDS="1"
    )
    activate(sqlite_db, reward_model, tiny_model)
    ids = [asked(sqlite_db, i, CONCISE) for i in range(3)]
    context.use_database(sqlite_db)
    context.use_settings(settings)
    app = create_celery(settings)
    worker = EmbeddedWorker(app, data_dir=tmp_path, beat=True, queues=("training",))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(scores(sqlite_db)) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
        context.use_database(None)
        context.use_settings(None)
    assert sorted(scores(sqlite_db)) == ids


def test_the_command_scores_first_when_asked(
    sqlite_db: Database, sqlite_url: str, tiny_model: Path, reward_model: Path
) -> None:
    from tests.integration.test_satisfaction_store import _cli

    activate(sqlite_db, reward_model, tiny_model)
    for i in range(3):
        asked(sqlite_db, i, CONCISE if i % 2 else RAMBLING)
    code, _, err = _cli(sqlite_url, "satisfaction", "--json")
    assert code == 2 and "no answers scored yet" in err
    code, out, err = _cli(sqlite_url, "satisfaction", "--score", "--json")
    assert code == 0, err
    assert "scored 3 answers of chat with chat-rm-v1" in err
    assert json.loads(out)["chat"]["adapters"]["base"]["answers"] == 3
