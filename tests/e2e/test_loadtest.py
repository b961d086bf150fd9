"""`loopgram loadtest`, briefly: 20 users for 15 s through the emulator with real limits.

Runs the command as a user would (its own process, which starts the bot as another), and
checks the JSON report: everyone answered, sane latencies, rates, memory sampled per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

USERS, MINUTES = 20, 0.25


@pytest.mark.slow
def test_a_short_load_test_reports_answers_latency_and_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopgram.cli",
            "loadtest",
            "--users",
            str(USERS),
            "--minutes",
            str(MINUTES),
            "--think-seconds",
            "1",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)  # exactly one JSON document on stdout

    assert report["users"] == USERS and report["model"] == "fast"
    assert report["seconds"] == pytest.approx(MINUTES * 60, abs=2)
    assert report["failed"] == 0, report["by_kind"]
    assert report["answered"] == report["actions"] - report["throttled"] > USERS
    assert report["by_kind"]["question"]["answered"] > USERS
    # The fast model streams in ~0.2 s; Telegram's 1 message/s per chat is the floor.
    assert 0 < report["p50_s"] <= report["p95_s"] < 15
    assert report["by_kind"]["press"]["p95_s"] is None or report["by_kind"]["press"]["p95_s"] < 5
    assert report["updates_per_s"] > 1 and report["bot_api_calls_per_s"] > 1
    assert report["limit_violations"] == 0

    memory = report["memory"]
    processes = {p["process"]: p for p in memory["processes"]}
    assert {"driver", "bot"} <= set(processes)
    assert processes["bot"]["judged"] and not processes["driver"]["judged"]
    for proc in processes.values():
        assert proc["samples"] >= 10
        assert 20 < proc["end_mb"] < 4000
        assert isinstance(proc["growth_mb"], float) and isinstance(proc["slope_mb_per_min"], float)
        assert proc["verdict"] in ("flat", "growing")
    assert memory["verdict"] in ("flat", "growing")
    assert done.returncode == (0 if memory["verdict"] == "flat" else 1)
    # Nothing is left behind: the temporary data dir is gone, the bot stopped.
    assert report["data_dir"] is None
    assert not any(tmp_path.iterdir())
