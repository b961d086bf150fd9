"""A trained adapter goes live on the real built-in server, and a rollback takes it off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from loopgram import adapters
from loopgram.adapter_server import HttpAdapterServer
from loopgram.db import Database
from loopgram.settings import Settings
from tests.training.test_pipeline import FAST, fill_buffer
from training.config import TrainConfig
from training.model_server.app import create_app, start_server
from training.model_server.transformers_backend import TransformersBackend
from training.pipeline import run_training


@pytest.fixture
def settings(settings_factory, sqlite_url: str, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return settings_factory(DATABASE_URL=sqlite_url, ADAPTERS_DIR=str(tmp_path / "adapters"))


async def test_train_deploy_serve_and_roll_back(
    settings: Settings, sqlite_db: Database, tiny_model: Path
) -> None:
    backend = TransformersBackend(tiny_model, model_id="loopgram-base")
    runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    try:
        fill_buffer(sqlite_db, 30)
        server = HttpAdapterServer([url])
        report = await asyncio.to_thread(
            run_training,
            settings=settings,
            config=TrainConfig(assistant="chat", method="dpo", **FAST),
            db=sqlite_db,
            server=server,
            model_path=tiny_model,
        )
        assert report.status == "succeeded" and report.adapter == "chat-v1"
        served = {m.id for m in (await client.models.list()).data}
        assert served == {"loopgram-base", "chat-v1"}

        async def ask(model: str) -> str:
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=1
            )
            return reply.choices[0].message.content or ""

        # Requests to the base and to the canary, all at once, none failing.
        answers = await asyncio.gather(
            *(ask("chat-v1" if i % 2 else "loopgram-base") for i in range(10))
        )
        assert len(answers) == 10

        await asyncio.to_thread(sqlite_db.call, adapters.rollback, assistant="chat", server=server)
        with pytest.raises(openai.NotFoundError):
            await ask("chat-v1")
        assert await ask("loopgram-base") is not None
    finally:
        await client.close()
        await runner.cleanup()
        close = getattr(backend, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
