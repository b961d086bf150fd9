"""The training lock: one run per assistant, released when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.lock import training_lock


def test_file_lock_is_exclusive_and_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, pathlib; from training.lock import training_lock\n"
            f"with training_lock('chat', redis_url=None, data_dir=pathlib.Path({str(tmp_path)!r})) as held:\n"
            "    print(held, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
    with training_lock("chat", redis_url=None, data_dir=tmp_path) as held:
        assert held is False
    with training_lock("paraphrase", redis_url=None, data_dir=tmp_path) as held:
        assert held is True
    holder.kill()  # a training run killed mid-way
    holder.wait()
    time.sleep(0.1)
    with training_lock("chat", redis_url=None, data_dir=tmp_path) as held:
        assert held is True


@pytest.mark.integration
def test_redis_lock_is_exclusive_and_owned(redis_url: str, tmp_path: Path) -> None:
    with training_lock("chat", redis_url=redis_url, data_dir=tmp_path) as first:
        assert first is True
        with training_lock("chat", redis_url=redis_url, data_dir=tmp_path) as second:
            assert second is False
    with training_lock("chat", redis_url=redis_url, data_dir=tmp_path, ttl_seconds=1) as again:
        assert again is True
