"""A training run SIGKILLed mid-way: no half-written adapter is registered or deployed, the
lock is released (file lock) or expires (Redis lock, renewed only while its holder lives),
and the next run — manual or scheduled — starts and succeeds by itself.

The run is the real pipeline on the tiny model (tests/training/conftest.py) in a process of
its own (`tests/faults/train_main.py`), killed either while TRL trains, or after the adapter
folder is complete but before it is registered (the gate is held by a judge that never
answers).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from loopgram import adapters
from loopgram.db import Database
from loopgram.models import Adapter, AdapterStatus, TrainingRun
from tests.faults.conftest import ROOT, count, wait_until
from tests.integration.test_adapters import RecordingServer
from tests.training.conftest import tiny_model  # noqa: F401 (the fixture)
from tests.training.test_pipeline import FAST, fill_buffer
from training.config import TrainConfig
from training.pipeline import due_assistants, reap_interrupted_runs, run_training

pytest.importorskip("trl")
pytestmark = pytest.mark.slow

LOCK_TTL = 2  # seconds (the Redis lock's, renewed by its holder; production: a minute)


@pytest.fixture
def silent_judge() -> Iterator[str]:
    """An OpenAI-compatible URL that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"


def _folders(adapters_dir: Path) -> list[str]:
    base = adapters_dir / "chat"
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


@pytest.mark.parametrize(
    ("moment", "lock"),
    [("mid_training", "file"), ("before_registering", "file"), ("mid_training", "redis")],
)
def test_a_killed_run_leaves_no_adapter_and_the_next_run_succeeds(
    moment: str,
    lock: str,
    request: pytest.FixtureRequest,
    settings_factory,  # type: ignore[no-untyped-def]
    sqlite_url: str,
    sqlite_db: Database,
    tiny_model: Path,  # noqa: F811
    silent_judge: str,
    tmp_path: Path,
) -> None:
    redis_url = request.getfixturevalue("private_redis").url if lock == "redis" else None
    adapters_dir = tmp_path / "adapters"
    data_dir = tmp_path / "data"
    fill_buffer(sqlite_db, 30)
    config = {**FAST, "assistant": "chat", "method": "dpo", "task_eval_items": 0}
    if moment == "mid_training":
        config |= {"epochs": 500}  # minutes of training: it is killed long before the end
    else:
        config |= {"epochs": 1, "judge_samples": 1, "judge_max_tokens": 4}
    spec = {
        "database_url": sqlite_url,
        "data_dir": str(data_dir),
        "adapters_dir": str(adapters_dir),
        "model_path": str(tiny_model),
        "llm_base_url": silent_judge,
        "redis_url": redis_url,
        "lock_ttl": LOCK_TTL,
        **config,
    }
    log = tmp_path / "train.log"
    run = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("train_main.py")), json.dumps(spec)],
        cwd=str(ROOT),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )
    try:
        if moment == "mid_training":
            wait_until(
                lambda: any(".tmp-" in name for name in _folders(adapters_dir)),
                120,
                "training started",
            )
            # The first logged step: seconds when idle, minutes on a loaded 2-core machine.
            wait_until(
                lambda: "training.step step=1 loss=" in log.read_text(),
                240,
                "first training step logged",
            )
        else:
            wait_until(lambda: "chat-v1" in _folders(adapters_dir), 120, "adapter written")
        assert run.poll() is None, log.read_text()[-3000:]
        run.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    # Killed: nothing registered, nothing loaded; the run still says "running".
    assert count(sqlite_db, Adapter) == 0
    (killed,) = sqlite_db.call(lambda *, session: list(session.exec(select(TrainingRun)).all()))
    assert killed.status == "running"
    if moment == "mid_training":
        assert "chat-v1" not in _folders(adapters_dir), "a half-trained adapter is in place"

    settings = settings_factory(
        DATABASE_URL=sqlite_url,
        DATA_DIR=str(data_dir),
        ADAPTERS_DIR=str(adapters_dir),
        LLM_BASE_URL="http://127.0.0.1:9/v1",
        **({"REDIS_URL": redis_url} if redis_url else {}),
    )
    # The scheduler sees the dead run as such once its lock is free (released by the kernel,
    # or expired because nobody renews it), and queues the assistant again.
    wait_until(lambda: reap_interrupted_runs(settings=settings, db=sqlite_db) == 1, LOCK_TTL * 5)
    assert sqlite_db.call(due_assistants, min_new_examples=20) == ["chat"]

    server = RecordingServer()
    report = run_training(
        settings=settings,
        config=TrainConfig(
            assistant="chat", method="dpo", judge_samples=0, task_eval_items=0, **FAST
        ),
        db=sqlite_db,
        server=server,
        model_path=tiny_model,
    )
    assert report.status == "succeeded", report.detail
    assert server.loaded == {"chat-v1"}
    adapter = sqlite_db.call(adapters.get_by_name, name="chat-v1")
    assert adapter.status == AdapterStatus.canary
    assert (Path(adapter.path) / "adapter_config.json").is_file()
    runs = sqlite_db.call(
        lambda *, session: list(session.exec(select(TrainingRun).order_by(TrainingRun.id)).all())
    )
    assert [r.status for r in runs] == ["failed", "succeeded"]
    assert "interrupted" in (runs[0].error or "")
