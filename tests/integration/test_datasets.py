"""Training datasets from the reward buffer, on SQLite and on Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, delete, select

from loopgram import crud
from loopgram.assistants import get_assistant
from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback
from loopgram.models import (
    Interaction,
    InteractionStatus,
    PairSource,
    PreferencePair,
    Rating,
    ReviewItem,
    RunStatus,
    TrainingRun,
    utcnow,
)
from loopgram.pii import scrub
from training.datasets import (
    KTOExample,
    PreferenceExample,
    buffer_counts,
    build_kto_dataset,
    build_preference_dataset,
    mark_consumed,
    split,
    to_trl_rows,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[2]


# --- building the buffer the way the bot does ----------------------------------------------


def _ask(
    db: Database,
    *,
    user_id: int,
    text: str,
    answer: str,
    parent: int | None = None,
    assistant: str = "chat",
    status: InteractionStatus = InteractionStatus.ok,
) -> int:
    """Store an answered question with the messages the model was sent (as AnswerService does:
    the assistant's system prompt, the chat's recent turns, the question)."""

    def make(*, session: Session) -> int:
        history = crud.recent_turns(
            session=session,
            chat_id=user_id,
            message_thread_id=None,
            since=None,
            limit=4,
            before_id=parent,
        )
        messages = get_assistant(assistant).build_messages(lang="ru", history=history, text=text)
        row = crud.add_interaction(
            session=session,
            interaction=Interaction(
                chat_id=user_id,
                user_id=user_id,
                assistant=assistant,
                prompt=text,
                prompt_messages=messages,
                answer=answer,
                status=status,
                parent_interaction_id=parent,
            ),
        )
        assert row.id is not None
        return row.id

    return db.call(make)


def _rate(db: Database, interaction_id: int, user_id: int, value: int) -> None:
    result = db.call(
        apply_feedback,
        feedback=Feedback(interaction_id=interaction_id, user_id=user_id, value=value),
    )
    assert result.stored


def _regenerated(
    db: Database, *, user_id: int, text: str, worse: str, better: str, assistant: str = "chat"
) -> tuple[int, int]:
    """Ask, press 🔄, rate the new version 👍: the path that writes a regenerate pair."""
    first = _ask(db, user_id=user_id, text=text, answer=worse, assistant=assistant)
    second = _ask(db, user_id=user_id, text=text, answer=better, parent=first, assistant=assistant)
    _rate(db, second, user_id, 1)
    return first, second


def _correction(db: Database, *, interaction_id: int, corrected: str, weight: float = 2.0) -> int:
    # No review code writes corrections yet: the row a moderator's correction would leave.
    def make(*, session: Session) -> int:
        original = session.get(Interaction, interaction_id)
        assert original is not None
        pair = PreferencePair(
            pair_key=f"correction:{interaction_id}",
            assistant=original.assistant,
            prompt=original.prompt,
            chosen=corrected,
            rejected=original.answer,
            rejected_interaction_id=interaction_id,
            source=PairSource.correction,
            weight=weight,
        )
        session.add(pair)
        session.flush()
        assert pair.id is not None
        return pair.id

    return db.call(make)


def _run(db: Database, *, status: RunStatus, started_ago: timedelta = timedelta(0)) -> int:
    def make(*, session: Session) -> int:
        run = TrainingRun(
            assistant="chat", method="dpo", status=status, started_at=utcnow() - started_ago
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id

    return db.call(make)


def _pairs(db: Database) -> list[PreferencePair]:
    return db.call(
        lambda *, session: list(
            session.exec(select(PreferencePair).order_by(col(PreferencePair.id))).all()
        )
    )


def _dpo(db: Database, **kwargs: Any) -> list[PreferenceExample]:
    return db.call(build_preference_dataset, assistant="chat", **kwargs)


def _kto(db: Database) -> list[KTOExample]:
    return db.call(build_kto_dataset, assistant="chat")


def _sides(examples: Sequence[PreferenceExample]) -> set[tuple[str, str, str, float]]:
    return {(e.chosen["content"], e.rejected["content"], e.source, e.weight) for e in examples}


# --- preference pairs ----------------------------------------------------------------------


def test_a_regenerate_choice_becomes_a_pair_with_the_prompt_the_model_saw(db: Database) -> None:
    earlier = _ask(db, user_id=7, text="Привет! Я Маша.", answer="Здравствуйте, Маша!")
    _rate(db, earlier, 7, 1)
    first, second = _regenerated(
        db,
        user_id=7,
        text="Как сбросить пароль?",
        worse="Никак.",
        better="Откройте Настройки → Безопасность → «Сбросить пароль».",
    )

    (example,) = _dpo(db)
    (pair,) = _pairs(db)
    assert example.chosen == {
        "role": "assistant",
        "content": "Откройте Настройки → Безопасность → «Сбросить пароль».",
    }
    assert example.rejected == {"role": "assistant", "content": "Никак."}
    assert (example.source, example.weight) == ("regenerate", 1.0)
    assert example.pair_ids == (pair.id,)
    assert set(example.interaction_ids) == {first, second}
    # Exactly the messages the model was sent: system prompt, the earlier turn, the question.
    assert [m["role"] for m in example.prompt] == ["system", "user", "assistant", "user"]
    assert example.prompt[1:] == [
        {"role": "user", "content": "Привет! Я Маша."},
        {"role": "assistant", "content": "Здравствуйте, Маша!"},
        {"role": "user", "content": "Как сбросить пароль?"},
    ]


def test_old_rows_without_prompt_messages_fall_back_to_the_question(db: Database) -> None:
    first, second = _regenerated(
        db, user_id=7, text="Что такое DPO?", worse="Не знаю.", better="Direct Preference Opt."
    )

    def forget_messages(*, session: Session) -> None:
        for iid in (first, second):
            row = session.get(Interaction, iid)
            assert row is not None
            row.prompt_messages = []
            session.add(row)

    db.call(forget_messages)
    (example,) = _dpo(db)
    assert example.prompt == [{"role": "user", "content": "Что такое DPO?"}]


def test_ratings_pair_answers_to_near_identical_prompts_only(db: Database) -> None:
    good = _ask(db, user_id=1, text="Как сбросить пароль в приложении?", answer="Через Настройки.")
    bad = _ask(db, user_id=2, text="как сбросить   пароль в приложении", answer="Переустановите.")
    long_q = (
        "Подскажите пожалуйста как мне быстро сбросить забытый пароль в мобильном приложении банка"
    )
    good_long = _ask(db, user_id=3, text=long_q, answer="Нажмите «Забыли пароль?».")
    bad_long = _ask(
        db, user_id=4, text=long_q.replace("банка", "банка сегодня"), answer="Позвоните."
    )
    other = _ask(db, user_id=5, text="Как удалить аккаунт?", answer="Никак.")
    router = _ask(db, user_id=6, text="Как сбросить пароль на роутере?", answer="Кнопка Reset.")
    for iid, user, value in (
        (good, 1, 1), (bad, 2, -1), (good_long, 3, 1), (bad_long, 4, -1), (other, 5, -1),
        (router, 6, 1),
    ):  # fmt: skip
        _rate(db, iid, user, value)

    examples = _dpo(db)
    assert _sides(examples) == {
        ("Через Настройки.", "Переустановите.", "rating", 0.5),  # normalised text equal
        ("Нажмите «Забыли пароль?».", "Позвоните.", "rating", 0.5),  # Jaccard 13/14
    }
    by_chosen = {e.chosen["content"]: e for e in examples}
    # The prompt is the one the better answer was given to; no stored pair to consume.
    assert by_chosen["Через Настройки."].prompt[-1]["content"] == (
        "Как сбросить пароль в приложении?"
    )
    assert by_chosen["Через Настройки."].pair_ids == ()
    assert set(by_chosen["Через Настройки."].interaction_ids) == {good, bad}
    assert _pairs(db) == []  # deriving pairs writes nothing


def test_a_correction_keeps_its_weight_over_the_same_pair_from_ratings(db: Database) -> None:
    wrong = _ask(db, user_id=1, text="Столица Австралии?", answer="Сидней.")
    right = _ask(db, user_id=2, text="Столица Австралии?", answer="Канберра.")
    _rate(db, wrong, 1, -1)
    _rate(db, right, 2, 1)
    assert _sides(_dpo(db)) == {("Канберра.", "Сидней.", "rating", 0.5)}

    correction = _correction(db, interaction_id=wrong, corrected="Канберра.")
    (example,) = _dpo(db)
    assert (example.source, example.weight) == ("correction", 2.0)
    assert example.pair_ids == (correction,)
    assert set(example.interaction_ids) == {wrong, right}


def test_duplicates_merge_and_pairs_equal_after_scrubbing_are_dropped(db: Database) -> None:
    for user_id in (1, 2):  # two people, the same question, the same two answers
        _regenerated(db, user_id=user_id, text="Сколько будет 2+2?", worse="5.", better="4.")
    _regenerated(
        db,
        user_id=3,
        text="Номер поддержки?",
        worse="Звоните 8 912 345 67 89.",
        better="Звоните 8 912 345 67 00.",
    )
    assert len(_pairs(db)) == 3

    (example,) = _dpo(db)
    assert (example.chosen["content"], example.rejected["content"]) == ("4.", "5.")
    assert example.pair_ids == tuple(p.id for p in _pairs(db)[:2])


def test_personal_data_never_reaches_a_row(db: Database) -> None:
    phone, email = "+7 (912) 345-67-89", "ivan.petrov@example.com"
    _ask(db, user_id=7, text=f"Мой телефон {phone}", answer="Записал.")
    _regenerated(
        db,
        user_id=7,
        text=f"Пришлите счёт на {email} и позвоните на 8 912 345 67 89",
        worse=f"Отправил на {email}.",
        better="Отправлю счёт на указанную почту и перезвоню.",
    )
    rated = _ask(db, user_id=8, text=f"Я {email}, карта 4111 1111 1111 1111", answer="Ок.")
    _rate(db, rated, 8, -1)

    dpo, kto = _dpo(db), _kto(db)
    assert dpo and kto
    dumped = json.dumps(
        to_trl_rows(dpo) + to_trl_rows(kto) + [repr(e) for e in [*dpo, *kto]], ensure_ascii=False
    )
    for secret in ("345-67-89", "912 345 67 89", "ivan.petrov", "example.com", "4111"):
        assert secret not in dumped
    assert "[PHONE]" in dumped and "[EMAIL]" in dumped and "[CARD]" in dumped
    assert scrub(dumped) == dumped


# --- consumption and what counts as new ----------------------------------------------------


def test_consumed_pairs_are_left_out_and_keep_their_first_run(db: Database) -> None:
    _regenerated(db, user_id=1, text="Вопрос один?", worse="плохо", better="хорошо")
    _regenerated(db, user_id=2, text="Вопрос два?", worse="плохо", better="хорошо")
    first, second = (p.id for p in _pairs(db))
    assert first is not None and second is not None
    run = _run(db, status=RunStatus.succeeded)
    later_run = _run(db, status=RunStatus.succeeded)

    assert db.call(mark_consumed, pair_ids=[first, first], run_id=run) == 1
    assert db.call(mark_consumed, pair_ids=[first, second], run_id=later_run) == 1
    assert [p.consumed_by_run for p in _pairs(db)] == [run, later_run]
    assert _dpo(db) == []
    assert {e.pair_ids for e in _dpo(db, include_consumed=True)} == {(first,), (second,)}
    assert db.call(mark_consumed, pair_ids=[], run_id=run) == 0


def test_buffer_counts_and_rating_pairs_start_over_after_a_successful_run(db: Database) -> None:
    good = _ask(db, user_id=1, text="Что такое LoRA?", answer="Низкоранговые адаптеры.")
    bad = _ask(db, user_id=2, text="что такое LoRA", answer="Это сеть.")
    _rate(db, good, 1, 1)
    _rate(db, bad, 2, -1)
    _regenerated(db, user_id=3, text="Что такое KTO?", worse="Не знаю.", better="Метод обучения.")
    _ask(db, user_id=4, text="сбой", answer="", status=InteractionStatus.failed)
    counts = db.call(buffer_counts, assistant="chat")
    assert counts == {"new_pairs": 1, "new_ratings": 3, "new_examples": 4}
    assert len(_dpo(db)) == 2

    run = _run(db, status=RunStatus.succeeded)
    db.call(mark_consumed, pair_ids=[p.id for p in _pairs(db) if p.id], run_id=run)
    # Runs that did not succeed, or older ones, do not move the line.
    _run(db, status=RunStatus.rejected)
    _run(db, status=RunStatus.succeeded, started_ago=timedelta(days=3))
    nothing = {"new_pairs": 0, "new_ratings": 0, "new_examples": 0}
    assert db.call(buffer_counts, assistant="chat") == nothing
    assert db.call(buffer_counts, assistant="other") == nothing
    assert _dpo(db) == []  # the rating pair was seen by that run too
    assert len(_dpo(db, include_consumed=True)) == 2

    _rate(db, bad, 2, 1)  # a changed mind is new feedback
    _rate(db, bad, 2, -1)
    assert db.call(buffer_counts, assistant="chat")["new_ratings"] == 1
    assert _sides(_dpo(db)) == {("Низкоранговые адаптеры.", "Это сеть.", "rating", 0.5)}


# --- KTO -----------------------------------------------------------------------------------


def test_kto_labels_come_from_the_latest_rating_and_from_unrated_pair_sides(
    db: Database,
) -> None:
    liked = _ask(db, user_id=1, text="Переведи «кот»", answer="cat")
    disliked = _ask(db, user_id=2, text="Переведи «собака»", answer="cat")
    _rate(db, liked, 1, 1)
    _rate(db, disliked, 2, 1)
    _rate(db, disliked, 2, -1)  # changed its mind: the latest rating counts
    worse, better = _regenerated(db, user_id=3, text="2+2?", worse="5", better="4")
    correction = _correction(db, interaction_id=disliked, corrected="dog")
    failed = _ask(
        db, user_id=4, text="сбой", answer="частичный ответ", status=InteractionStatus.failed
    )
    _rate(db, failed, 4, -1)
    _regenerated(db, user_id=5, text="Перефразируй", worse="x", better="y", assistant="paraphrase")

    kto = _kto(db)
    got = {(e.prompt[-1]["content"], e.completion["content"], e.label, e.source) for e in kto}
    assert got == {
        ("Переведи «кот»", "cat", True, "rating"),
        ("Переведи «собака»", "cat", False, "rating"),
        ("2+2?", "4", True, "rating"),
        ("2+2?", "5", False, "regenerate"),  # the unrated first version, from its pair
        ("Переведи «собака»", "dog", True, "correction"),  # the moderator's answer
    }
    by_completion = {(e.completion["content"], e.label): e for e in kto}
    assert by_completion[("5", False)].interaction_ids == (worse,)
    assert by_completion[("4", True)].interaction_ids == (better,)
    assert by_completion[("dog", True)].pair_ids == (correction,)
    assert all(e.completion["role"] == "assistant" for e in kto)


# --- split and export ----------------------------------------------------------------------

SCENARIO = [
    (f"Вопрос номер {word}?", f"хороший ответ {word}", f"плохой ответ {word}")
    for word in ("один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")
]


def _wipe(*, session: Session) -> None:
    for table in (PreferencePair, Rating, ReviewItem, TrainingRun, Interaction):
        session.exec(delete(table))


def _insert_scenario(db: Database, order: Sequence[int]) -> None:
    for user_id, index in enumerate(order, start=10):
        text, good, bad = SCENARIO[index % len(SCENARIO)]
        if index >= len(SCENARIO):
            # The same question asked again by someone else: it must stay on one side.
            good, bad = good + "!", bad + "!"
        _regenerated(db, user_id=user_id, text=text, worse=bad, better=good)


def test_split_is_the_same_for_any_insertion_order(db: Database) -> None:
    results = []
    for order in (list(range(len(SCENARIO) + 1)), [4, 8, 1, 9, 6, 0, 3, 7, 2, 5]):
        db.call(_wipe)
        _insert_scenario(db, order)
        dpo, kto = _dpo(db), _kto(db)
        assert len(dpo) == len(SCENARIO) + 1
        dpo_train, dpo_eval = split(dpo, seed=13)
        kto_train, kto_eval = split(kto, seed=13)
        assert dpo_eval and dpo_train and kto_eval and kto_train
        for train, held_out in ((dpo_train, dpo_eval), (kto_train, kto_eval)):
            train_prompts = {e.prompt[-1]["content"] for e in train}
            assert not train_prompts & {e.prompt[-1]["content"] for e in held_out}
        results.append([to_trl_rows(part) for part in (dpo_train, dpo_eval, kto_train, kto_eval)])
    assert results[0] == results[1]


def _example(question: str, n: int = 0) -> PreferenceExample:
    return PreferenceExample(
        prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": question}],
        chosen={"role": "assistant", "content": f"good {n}"},
        rejected={"role": "assistant", "content": f"bad {n}"},
        weight=1.0,
        source="regenerate",
    )


def test_split_guarantees_an_eval_example_and_keeps_questions_together() -> None:
    examples = [_example(f"question {i}", i) for i in range(5)]
    for seed in range(30):
        train, held_out = split(examples, seed=seed)
        assert held_out and train and len(train) + len(held_out) == 5
        assert split(list(reversed(examples)), seed=seed) == (train, held_out)
    # Case and punctuation do not make a different question.
    same = [_example("Как дела?", 0), _example("как дела", 1)] + [
        _example(f"q{i}", i) for i in range(2, 8)
    ]
    for seed in range(30):
        train, held_out = split(same, seed=seed)
        in_eval = {e.chosen["content"]: e in held_out for e in same}
        assert in_eval["good 0"] == in_eval["good 1"]
    # One question only: keeping it out of both sides wins over the eval guarantee.
    assert split([_example("одно и то же", i) for i in range(6)])[1] == []
    train, held_out = split(examples, eval_fraction=0.0)
    assert (len(train), held_out) == (5, [])
    with pytest.raises(ValueError):
        split(examples, eval_fraction=1.0)


def test_split_does_not_depend_on_the_hash_seed() -> None:
    code = (
        "import json; from training.datasets import PreferenceExample, split, to_trl_rows\n"
        "ex = [PreferenceExample(prompt=[{'role': 'user', 'content': f'q{i % 7}'}],"
        " chosen={'role': 'assistant', 'content': f'a{i}'},"
        " rejected={'role': 'assistant', 'content': f'b{i}'}, weight=1.0, source='rating')"
        " for i in range(40)]\n"
        "print(json.dumps([to_trl_rows(part) for part in split(ex, seed=3)]))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "12345")
    }
    assert len(outputs) == 1


def test_the_module_imports_without_torch_or_trl() -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'trl', 'transformers', 'peft', 'datasets'):\n"
        "    sys.modules[name] = None\n"
        "import training.datasets\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_jsonl_round_trip_is_atomic(db: Database, tmp_path: Path) -> None:
    _regenerated(db, user_id=1, text="Привет", worse="Чё надо?", better="Здравствуйте!")
    rows = to_trl_rows(_dpo(db))
    kto_rows = to_trl_rows(_kto(db))
    assert rows == [
        {
            "prompt": [
                {"role": "system", "content": rows[0]["prompt"][0]["content"]},
                {"role": "user", "content": "Привет"},
            ],
            "chosen": [{"role": "assistant", "content": "Здравствуйте!"}],
            "rejected": [{"role": "assistant", "content": "Чё надо?"}],
        }
    ]
    assert {(r["completion"][0]["content"], r["label"]) for r in kto_rows} == {
        ("Здравствуйте!", True),
        ("Чё надо?", False),
    }
    assert to_trl_rows(_dpo(db), include_weight=True)[0]["weight"] == 1.0

    path = tmp_path / "out" / "dpo.jsonl"
    assert write_jsonl(rows + kto_rows, path) == 3
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows + kto_rows
    assert "Здравствуйте" in lines[0]  # UTF-8, not \u escapes

    def broken() -> Iterator[dict[str, Any]]:
        yield rows[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(broken(), path)
    # The old file is whole and no temporary file is left behind.
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == (
        rows + kto_rows
    )
    assert [p.name for p in path.parent.iterdir()] == ["dpo.jsonl"]
