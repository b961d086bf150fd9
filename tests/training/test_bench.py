"""`loopgram bench --quick`: every figure is a positive value over a positive baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.bench import FIGURES, BenchResults, Measurement, render_table, results_json

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_one_json_document_and_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "INFO"}
    # The pytest timeout bounds it; a wall-clock assertion would fail on a busy machine.
    result = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "bench", "--quick", "--json", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    document = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert set(document) == set(FIGURES)
    # Concurrent requests through the server (batched) over the same ones one at a time.
    assert document["server_concurrent_tokens_per_s"]["unit"] == "tokens/s"
    for name, figure in document.items():
        assert set(figure) == {"value", "unit", "baseline", "ratio"}, name
        assert figure["value"] > 0 and figure["baseline"] > 0, name
        assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline"], rel=1e-4)
        assert isinstance(figure["unit"], str) and figure["unit"], name

    assert json.loads((out / "bench.json").read_text(encoding="utf-8")) == document
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_skipped_figures_are_reported_with_their_note() -> None:
    taken = Measurement("update_text_answer", 50.0, "updates/s", 1000.0, "bare aiogram echo bot")
    results = BenchResults([taken], {"rating_ingest_per_s": "skipped: Redis is unreachable"})
    document = results_json(results)
    assert document["update_text_answer"]["ratio"] == pytest.approx(0.05)
    assert document["rating_ingest_per_s"] == {"skipped": "skipped: Redis is unreachable"}
    assert render_table(results).row_count == 2


def test_ingestion_skips_when_services_are_down() -> None:
    from workers.bench_ingest import services_problem

    pg_down = services_problem("postgresql://postgres@127.0.0.1:1/x", "redis://127.0.0.1:6379/14")
    assert pg_down is not None and "PostgreSQL is unreachable" in pg_down
    redis_down = services_problem(
        "postgresql://postgres@127.0.0.1:5432/test", "redis://127.0.0.1:1/14"
    )
    assert redis_down is not None and "Redis" in redis_down and "unreachable" in redis_down
    assert "needs PostgreSQL" in (services_problem("sqlite:///x.db", None) or "")


def test_update_bench_without_redis_uses_the_in_process_broker() -> None:
    import asyncio

    from bot.bench_updates import measure_updates

    rates = asyncio.run(measure_updates(30, redis_url="redis://127.0.0.1:1/14", warmup=2))
    assert rates.sink == "memory"
    assert min(rates.text, rates.text_bare, rates.callback, rates.callback_bare) > 0


@pytest.mark.slow
@pytest.mark.integration
def test_ingestion_through_a_real_worker_loses_nothing() -> None:
    from tests.conftest import PG_ADMIN_URL
    from workers.bench_ingest import bench_redis_url, measure_ingest, services_problem

    redis_url = bench_redis_url("redis://127.0.0.1:6379/0", 14)
    problem = services_problem(PG_ADMIN_URL, redis_url)
    if problem:
        pytest.skip(problem)
    result = measure_ingest(200, database_url=PG_ADMIN_URL, redis_url=redis_url)
    assert result.lost == 0 and result.stored == 200
    assert result.rate > 0 and result.plain_rate > 0


def test_bench_redis_url_names_the_benchs_own_database() -> None:
    from workers.bench_ingest import bench_redis_url

    assert bench_redis_url("redis://127.0.0.1:6379/0", 14) == "redis://127.0.0.1:6379/14"
    assert bench_redis_url("redis://:pw@host:6380", 14) == "redis://:pw@host:6380/14"
