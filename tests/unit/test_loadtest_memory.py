"""The load test's memory judgement (`bot/loadtest.py`): synthetic samples, a real sampler."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time

import pytest

from bot.loadtest import (
    MAX_GROWTH_MB,
    MemorySampler,
    judge_growth,
    memory_verdict,
    percentile,
    rss_bytes,
)

MB = 2**20


def series(
    seconds: int, base_mb: float, *, leak_mb_per_s: float = 0.0, seed: int = 0
) -> list[tuple[float, int]]:
    """One sample a second: a warm-up ramp over the first 15 %, then `base_mb` with ±1 MB
    of noise (and garbage-collection spikes), plus a steady leak when asked."""
    rng = random.Random(seed)
    samples = []
    for at in range(seconds):
        ramp = min(1.0, at / (0.15 * seconds))
        value = base_mb * (0.7 + 0.3 * ramp) + rng.uniform(-1, 1) + leak_mb_per_s * at
        if at % 17 == 0:
            value += 6  # a spike the medians must not take for growth
        samples.append((float(at), int(value * MB)))
    return samples


def test_a_flat_process_with_noise_and_a_warm_up_ramp_is_flat() -> None:
    result = judge_growth(series(180, 300), 180)
    assert result["verdict"] == "flat", result
    assert abs(result["growth_mb"]) < 2
    assert abs(result["slope_mb_per_min"]) < 1
    assert result["warm_mb"] == pytest.approx(300, abs=2)


def test_a_steady_leak_is_flagged() -> None:
    # 0.2 MB/s: 29 MB between the end of the warm-up and the end of a 3-minute run.
    result = judge_growth(series(180, 300, leak_mb_per_s=0.2), 180)
    assert result["verdict"] == "growing", result
    assert result["growth_mb"] > MAX_GROWTH_MB
    assert result["slope_mb_per_min"] == pytest.approx(12, rel=0.15)


def test_a_small_process_leaking_under_20_mb_is_flagged_by_the_percentage() -> None:
    # 40 MB growing by 5 MB: under the MB bound, but 12 %.
    result = judge_growth(series(100, 40, leak_mb_per_s=0.07), 100)
    assert result["verdict"] == "growing", result
    assert result["growth_mb"] < MAX_GROWTH_MB
    assert result["growth_pct"] > 5


def test_too_few_samples_give_no_verdict() -> None:
    assert judge_growth([(0.0, 10 * MB), (50.0, 10 * MB)], 60)["verdict"] == "unknown"
    assert judge_growth([], 60)["verdict"] == "unknown"


def test_only_judged_processes_decide_the_verdict() -> None:
    driver = {"judged": False, "verdict": "growing"}
    assert memory_verdict([{"judged": True, "verdict": "flat"}, driver]) == "flat"
    assert memory_verdict([{"judged": True, "verdict": "growing"}, driver]) == "growing"
    assert memory_verdict([{"judged": True, "verdict": "unknown"}]) == "unknown"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_the_sampler_follows_a_process_and_its_children() -> None:
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    children: list[int] = []
    try:
        time.sleep(0.3)  # let sh start its child
        sampler = MemorySampler({"shell": (parent.pid, True), "me": (os.getpid(), False)})
        for _ in range(3):
            sampler.sample()
        roles = {s.role: s for s in sampler.series.values()}
        children = [s.pid for s in roles.values() if s.role.startswith("shell ›")]
        assert set(roles) == {"shell", "shell › sleep", "me"}
        assert all(len(s.samples) == 3 for s in roles.values())
        assert roles["me"].samples[-1][1] == pytest.approx(rss_bytes(os.getpid()), rel=0.2)
        assert roles["shell › sleep"].judged
        report = sampler.report(duration=1.0)
        assert {p["process"] for p in report} == set(roles)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
    assert rss_bytes(parent.pid) is None
