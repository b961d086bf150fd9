"""The policy gate's reward-model check on the tiny model: the assistant's active reward model
scores the candidate's and the active answers to the judge's held-out prompts, its agreement
with a (scripted) LLM judge, `reward_min_win_rate`, and the admin's report of it all."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from loopgram.db import Database
from loopgram.models import TrainingRun
from loopgram.run_report import build_report, gate_figures, held_out_lines, task_lines
from loopgram.settings import Settings
from tests.factories import activate_reward_model
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import CONCISE, CORPUS, RAMBLING, pair_rows
from tests.training.test_judge import judge_server, prefers_concise
from tests.training.test_pipeline import FAST, fill_buffer
from training.config import TrainConfig
from training.pipeline import _judge, run_training
from training.reward import train_reward_model
from training.reward_check import HeldOutAnswer, agreement, compare_answers, reward_check


@pytest.fixture(scope="module")
def reward_models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One reward model that learned the people's taste (the concise answer), and one that
    learned to rank any everyday sentence above it (whatever else an answer says beats it)."""
    folder = tmp_path_factory.mktemp("reward-gate")
    config = TrainConfig(method="reward", **FAST)  # type: ignore[arg-type]
    sentences = [s for s in CORPUS.read_text(encoding="utf-8").splitlines() if s[:1].isalpha()]
    anti = [
        {**row, "chosen": [{"role": "assistant", "content": sentences[i][:80]}]}
        for i, row in enumerate(pair_rows(24, flipped=True))
    ]
    return {
        "likes_concise": train_reward_model(
            config, pair_rows(24), model_path=tiny_model, output_dir=folder / "good"
        ).adapter_path,
        "dislikes_concise": train_reward_model(
            config, anti, model_path=tiny_model, output_dir=folder / "anti"
        ).adapter_path,
    }


def activate(db: Database, path: Path, base_model: Path, assistant: str = "chat") -> str:
    return activate_reward_model(
        db, path=str(path), base_model=str(base_model), assistant=assistant
    )


def answers(n: int, *, concise_candidate: list[bool]) -> list[HeldOutAnswer]:
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question number {5000 + i}: can you help?"}]
        good = concise_candidate[i]
        out.append(
            HeldOutAnswer(prompt, CONCISE if good else RAMBLING, RAMBLING if good else CONCISE)
        )
    return out


# --- the arithmetic, without models ---------------------------------------------------------


def test_win_rate_means_and_ties() -> None:
    def score(items: Any) -> list[float]:
        return [1.0 if answer == CONCISE else 0.0 for _prompt, answer in items]

    held = answers(4, concise_candidate=[True, True, False, True])
    held.append(HeldOutAnswer([{"role": "user", "content": "same"}], CONCISE, CONCISE))
    result = compare_answers(score, "chat-rm-v1", held).as_dict()
    assert result["available"] and result["name"] == "chat-rm-v1" and result["prompts"] == 5
    assert result["win_rate"] == pytest.approx((3 + 0.5) / 5)  # the identical pair is a tie
    assert result["candidate_mean"] == pytest.approx(4 / 5)
    assert result["active_mean"] == pytest.approx(2 / 5)
    assert result["margins"] == [1.0, 1.0, -1.0, 1.0, 0.0]


def test_agreement_leaves_ties_out_and_lists_disagreements() -> None:
    held = answers(5, concise_candidate=[True] * 5)
    judge = {"available": True, "preferences": [1.0, 0.0, 0.5, 1.0, 0.0]}
    reward = {"available": True, "margins": [2.0, 1.0, 3.0, 0.0, -1.0]}
    result = agreement(judge, reward, held)
    # Prompt 2 undecided by the judge, prompt 3 by the reward model.
    assert result["available"] and result["compared"] == 3 and result["undecided"] == 2
    assert result["agreed"] == 2 and result["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    [odd] = result["disagreements"]
    assert odd == {
        "prompt": "Question number 5001: can you help?",
        "judge": "active",
        "reward_model": "candidate",
        "margin": 1.0,
    }
    assert not agreement({"available": False}, reward, held)["available"]
    none_decided = agreement({"available": True, "preferences": [0.5] * 5}, reward, held)
    assert not none_decided["available"] and "no prompt decided by both" in none_decided["note"]


def test_report_lines_and_chart_figures() -> None:
    gate = {
        "candidate": {"accuracy": 0.8},
        "active": {"accuracy": 0.6},
        "judge": {"available": True, "win_rate": 0.75, "comparisons": 4, "ties": 1},
        "reward_model": {
            "available": True,
            "name": "chat-rm-v2",
            "candidate_mean": 1.25,
            "active_mean": -0.5,
            "win_rate": 0.25,
            "prompts": 4,
        },
        "agreement": {
            "available": True,
            "agreement": 0.0,
            "agreed": 0,
            "compared": 3,
            "undecided": 1,
            "disagreements": [
                {"prompt": f"q{i}", "judge": "candidate", "reward_model": "active"}
                for i in range(5)
            ],
        },
    }
    en = held_out_lines(gate, "en")
    assert en[0].startswith("LLM judge: candidate win rate 0.75 on 4")
    assert "Reward model chat-rm-v2: mean score 1.250 (candidate) vs -0.500" in en[1]
    assert "win rate 0.25 on 4 prompts" in en[1]
    assert en[2].startswith("Judge and reward model agree on 0 of 3 prompts")
    assert en[3] == "≠ “q0”: the judge prefers the candidate, the reward model the active answer"
    assert len(en) == 6, "three disagreements shown at most"
    ru = held_out_lines(gate, "ru")
    assert ru[1].startswith("Модель награды chat-rm-v2") and "≠ «q0»: судья за кандидата" in ru[3]
    # A run judged since the counts are kept shows the decisive comparisons and the p.
    judged = {"available": True, "win_rate": 0.34, "comparisons": 16, "ties": 11, "wins": 0,
              "losses": 5, "p_worse": 0.0312}  # fmt: skip
    assert held_out_lines({"judge": judged}, "en") == [
        "LLM judge: candidate win rate 0.34 on 16 held-out prompts: won 0, lost 5, 11 ties "
        "(sign test p = 0.03)"
    ]
    assert held_out_lines({"judge": judged}, "ru") == [
        "LLM-судья: доля побед кандидата 0.34 на 16 отложенных вопросах: побед 0, поражений 5, "
        "ничьих 11 (критерий знаков p = 0.03)"
    ]
    assert dict(gate_figures(gate)) == {
        "pref. accuracy, candidate": 0.8,
        "pref. accuracy, active": 0.6,
        "judge win rate": 0.75,
        "reward-model win rate": 0.25,
        "judge / reward model agree": 0.0,
    }
    # Runs recorded before these checks existed (and reward-model runs) show nothing more.
    assert held_out_lines({"candidate": {"accuracy": 0.5}}, "en") == []
    off = {"judge": {"available": False, "note": "judge unavailable: refused"}}
    off["reward_model"] = {"available": False, "note": "no active reward model for chat"}
    assert held_out_lines(off, "en") == [
        "LLM judge: — (judge unavailable: refused)",
        "Reward model: — (no active reward model for chat)",
    ]


def test_the_admins_see_the_task_check_with_its_length_bound() -> None:
    task = {"available": True, "metric": "ok_rate", "candidate": 0.0, "active": 0.25, "items": 8,
            "better_items": 0, "worse_items": 2, "p_worse": 0.25, "passed": True,
            "max_rewrite_length": 1.0}  # fmt: skip
    assert task_lines({"task": task}, "en") == [
        "Task check, ok_rate on 8 evaluation items: candidate 0.00, the model it would replace "
        "0.25; right on 0 items the other got wrong, wrong on 2 it got right (sign test p = 0.25)",
        "The task check counts a rewrite up to 1× its source's length as ok",
    ]
    ru = task_lines({"task": task}, "ru")
    assert ru[0].startswith("Проверка задачи, ok_rate на 8 примерах оценки: кандидат 0.00")
    assert ru[1] == "Проверка задачи засчитывает пересказ длиной до 1× исходного текста"
    moderate = {k: v for k, v in task.items() if k != "max_rewrite_length"}
    assert len(task_lines({"task": moderate}, "en")) == 1
    off = {"available": False, "note": "no task check for this assistant or it is off"}
    assert task_lines({"task": off}, "ru") == [
        "Проверка задачи: — (no task check for this assistant or it is off)"
    ]
    # Not run (an earlier check failed: the record is {}), or recorded before it existed.
    assert task_lines({"task": {}}, "en") == task_lines({}, "en") == []


# --- the tiny reward models ------------------------------------------------------------------


def test_reward_check_scores_with_the_active_reward_model(
    sqlite_db: Database, tiny_model: Path, reward_models: dict[str, Path], tmp_path: Path
) -> None:
    held = answers(6, concise_candidate=[True, True, True, True, False, False])
    assert reward_check(sqlite_db, "chat", held) == {
        "available": False,
        "note": "no active reward model for chat",
    }
    assert reward_check(sqlite_db, "chat", [])["available"] is False

    name = activate(sqlite_db, reward_models["likes_concise"], tiny_model)
    good = reward_check(sqlite_db, "chat", held)
    assert good["available"] and good["name"] == name and good["prompts"] == 6
    assert good["win_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert [m > 0 for m in good["margins"]] == [True] * 4 + [False] * 2

    copy = tmp_path / "dislikes-concise"
    shutil.copytree(reward_models["dislikes_concise"], copy)
    name = activate(sqlite_db, copy, tiny_model)
    bad = reward_check(sqlite_db, "chat", held)
    assert bad["name"] == name and bad["win_rate"] == pytest.approx(2 / 6, abs=1e-4)

    # Its files are gone: recorded with the reason, nothing raised.
    shutil.rmtree(copy)
    gone = reward_check(sqlite_db, "chat", held)
    assert gone["available"] is False and f"reward model {name} unusable" in gone["note"]


@pytest.fixture
async def fair_judge_url() -> AsyncIterator[str]:
    async for url in judge_server(prefers_concise):
        yield url


async def test_judge_and_reward_model_agreement_on_the_same_answers(
    settings_factory: Any,
    sqlite_db: Database,
    tiny_model: Path,
    reward_models: dict[str, Path],
    fair_judge_url: str,
) -> None:
    settings: Settings = settings_factory(LLM_BASE_URL=fair_judge_url)
    held = answers(4, concise_candidate=[True, False, True, True])
    judged = await asyncio.to_thread(_judge, settings, held)
    assert judged["available"] and judged["preferences"] == [1.0, 0.0, 1.0, 1.0]

    activate(sqlite_db, reward_models["likes_concise"], tiny_model)
    same_taste = await asyncio.to_thread(reward_check, sqlite_db, "chat", held)
    agreed = agreement(judged, same_taste, held)
    assert agreed["agreement"] == 1.0 and agreed["compared"] == 4 and agreed["disagreements"] == []

    activate(sqlite_db, reward_models["dislikes_concise"], tiny_model)
    opposite = await asyncio.to_thread(reward_check, sqlite_db, "chat", held)
    disagreed = agreement(judged, opposite, held)
    assert disagreed["agreement"] == 0.0 and len(disagreed["disagreements"]) == 4
    assert disagreed["disagreements"][1] == {
        "prompt": "Question number 5001: can you help?",
        "judge": "active",
        "reward_model": "candidate",
        "margin": opposite["margins"][1],
    }


# --- whole runs -------------------------------------------------------------------------------


def options_of(*parts: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "assistant": "chat",
        "method": "dpo",
        "judge_samples": 4,
        "judge_max_tokens": 16,
    }
    for part in parts:
        options.update(part)
    return options


def _run(settings: Settings, db: Database, model: Path, **options: Any) -> Any:
    server = RecordingServer()
    report = run_training(
        settings=settings,
        config=TrainConfig(**options_of(FAST, options)),
        db=db,
        server=server,
        model_path=model,
    )
    return report, server


def _run_row(db: Database) -> TrainingRun:
    row: TrainingRun = db.call(lambda *, session: session.exec(select(TrainingRun)).one())
    return row


async def test_a_run_rejected_because_the_reward_model_dislikes_the_candidate(
    settings_factory: Any,
    sqlite_url: str,
    sqlite_db: Database,
    tiny_model: Path,
    tmp_path: Path,
    reward_models: dict[str, Path],
    fair_judge_url: str,
) -> None:
    """The candidate learns the people's concise answer and the judge (concise too) prefers
    it to the base model's; the active reward model, trained to rank anything above that
    answer, does not: with reward_min_win_rate 0.5 it blocks the run, and the report shows
    the disagreement."""
    settings: Settings = settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL=fair_judge_url,
    )
    fill_buffer(sqlite_db, 30)
    name = activate(sqlite_db, reward_models["dislikes_concise"], tiny_model)
    report, server = await asyncio.to_thread(
        _run, settings, sqlite_db, tiny_model, reward_min_win_rate=0.5
    )
    assert report.status == "rejected", report.detail
    assert f"the reward model {name} prefers the active answers" in report.detail
    assert server.calls == []
    gate = _run_row(sqlite_db).evaluation
    assert gate["judge"]["available"] and gate["judge"]["win_rate"] > 0.5
    rm = gate["reward_model"]
    assert rm["available"] and rm["name"] == name and rm["prompts"] == gate["judge"]["comparisons"]
    assert rm["win_rate"] < 0.5 and rm["candidate_mean"] < rm["active_mean"]
    assert gate["agreement"]["available"] and gate["agreement"]["agreement"] < 0.5
    assert gate["agreement"]["disagreements"]

    def report_text(lang: str) -> str:
        run_id = _run_row(sqlite_db).id
        return sqlite_db.call(build_report, run_id=run_id, lang=lang).text

    en = await asyncio.to_thread(report_text, "en")
    assert f"Reward model {name}: mean score" in en and "LLM judge: candidate win rate" in en
    assert "≠ “Question number" in en and "prefers the active answers" in en
    ru = await asyncio.to_thread(report_text, "ru")
    assert f"Модель награды {name}" in ru and "Судья и модель награды согласны" in ru


async def test_by_default_the_reward_model_is_reported_only_and_works_without_a_judge(
    settings_factory: Any,
    sqlite_url: str,
    sqlite_db: Database,
    tiny_model: Path,
    tmp_path: Path,
    reward_models: dict[str, Path],
) -> None:
    settings: Settings = settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL="http://127.0.0.1:9/v1",  # no judge listens: still answered and scored
    )
    fill_buffer(sqlite_db, 30)
    name = activate(sqlite_db, reward_models["dislikes_concise"], tiny_model)
    report, server = await asyncio.to_thread(_run, settings, sqlite_db, tiny_model)
    assert report.status == "succeeded", report.detail
    assert "chat-v1" in server.loaded
    gate = _run_row(sqlite_db).evaluation
    assert gate["judge"]["available"] is False
    assert gate["reward_model"]["available"] and gate["reward_model"]["name"] == name
    assert gate["reward_model"]["win_rate"] < 0.5 and gate["reward_model"]["prompts"] > 0
    assert gate["agreement"] == {
        "available": False,
        "note": "needs both the judge and the reward model",
    }


def test_reward_min_win_rate_is_a_share() -> None:
    with pytest.raises(ValueError, match="reward_min_win_rate"):
        TrainConfig(reward_min_win_rate=1.5)
    assert TrainConfig().reward_min_win_rate == 0.0
