"""The pairwise LLM judge against a real OpenAI-compatible server with scripted verdicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from sqlmodel import select

from loopgram.db import Database
from loopgram.models import TrainingRun
from loopgram.settings import Settings
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import CONCISE
from tests.training.test_pipeline import FAST, fill_buffer
from training.config import TrainConfig
from training.judge import PairwiseJudge, judge_candidate
from training.model_server.app import create_app, start_server
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend
from training.pipeline import run_training


def prefers_concise(request: GenerationRequest) -> str:
    text = request.messages[-1]["content"]
    answer_a = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
    return "A" if CONCISE in answer_a else "B"


async def judge_server(reply: object) -> AsyncIterator[str]:
    runner, url = await start_server(create_app(ScriptedBackend(reply)), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def fair_judge_url() -> AsyncIterator[str]:
    async for url in judge_server(prefers_concise):
        yield url


@pytest.fixture
async def biased_judge_url() -> AsyncIterator[str]:
    async for url in judge_server("B, definitely B"):
        yield url


async def test_position_swap_cancels_bias(fair_judge_url: str, biased_judge_url: str) -> None:
    def ask(url: str) -> tuple[float, float]:
        with openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client:
            judge = PairwiseJudge(client, "loopgram-base")
            return judge.prefer("q", CONCISE, "long"), judge.prefer("q", "long", CONCISE)

    assert await asyncio.to_thread(ask, fair_judge_url) == (1.0, 0.0)
    assert await asyncio.to_thread(ask, biased_judge_url) == (0.5, 0.5)

    def score(url: str) -> float:
        with openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client:
            items = [("q1", CONCISE, "long"), ("q2", "long", CONCISE), ("q3", CONCISE, CONCISE)]
            return judge_candidate(PairwiseJudge(client, "loopgram-base"), items).win_rate

    assert await asyncio.to_thread(score, fair_judge_url) == pytest.approx(0.5)


@pytest.mark.parametrize("rule", ["better", "not-worse"])
async def test_a_judge_below_the_win_rate_vetoes_under_the_point_rule_only(
    rule: str,
    settings_factory,
    sqlite_url: str,
    sqlite_db: Database,
    tiny_model: Path,
    tmp_path: Path,
    biased_judge_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """The biased judge's verdicts all flip with the order: every comparison is a tie, win
    rate 0.5, below the required 0.6. The point rule (`gate_rule: better`) rejects on that;
    the not-worse rule does not, because ties show nothing worse, and the canary decides."""
    settings: Settings = settings_factory(
        DATABASE_URL=sqlite_url,
        ADAPTERS_DIR=str(tmp_path / "adapters"),
        LLM_BASE_URL=biased_judge_url,
    )
    fill_buffer(sqlite_db, 30)
    server = RecordingServer()
    report = await asyncio.to_thread(
        run_training,
        settings=settings,
        config=TrainConfig(
            assistant="chat",
            method="dpo",
            judge_samples=4,
            judge_max_tokens=8,
            judge_min_win_rate=0.6,
            gate_rule=rule,
            **FAST,
        ),
        db=sqlite_db,
        server=server,
        model_path=tiny_model,
    )
    run = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).one())
    judged = run.evaluation["judge"]
    assert judged["available"] is True and judged["win_rate"] == 0.5
    assert judged["comparisons"] == min(4, run.eval_examples) > 0
    assert (judged["wins"], judged["losses"], judged["p_worse"]) == (0, 0, 1.0)
    if rule == "better":
        assert report.status == "rejected" and "judge prefers" in report.detail, report.detail
        assert server.calls == []
    else:
        assert "judge" not in report.detail, report.detail


@pytest.mark.parametrize(
    ("wins", "losses", "ties", "rule", "vetoed"),
    [
        (7, 9, 0, "not-worse", False),  # 0.44 < 0.5, but 7 against 9 is a coin (p=0.40)
        (7, 9, 0, "better", True),  # the point rule
        (0, 5, 11, "not-worse", True),  # lost every decisive comparison: p=0.031
        (0, 4, 12, "not-worse", False),  # four decisive losses cannot reach 0.05 (p=0.0625)
        (2, 12, 2, "not-worse", True),
        (9, 7, 0, "not-worse", False),  # above the win rate: never a veto
        (9, 7, 0, "better", False),
    ],
)
def test_the_judge_vetoes_only_a_candidate_shown_worse_under_not_worse(
    wins: int, losses: int, ties: int, rule: str, vetoed: bool
) -> None:
    from training.judge import JudgeScore, judge_veto

    preferences = (1.0,) * wins + (0.0,) * losses + (0.5,) * ties
    n = len(preferences)
    judged = JudgeScore((wins + ties / 2) / n, ties, n, preferences).as_dict()
    assert (judged["wins"], judged["losses"]) == (wins, losses)
    reason = judge_veto(judged, min_win_rate=0.5, rule=rule, alpha=0.05)
    assert (reason is not None) is vetoed
    if reason is not None:
        assert reason.startswith("the judge prefers the active answers (candidate win rate")
        if rule == "not-worse":
            assert f"won {wins}, lost {losses}, p=" in reason
