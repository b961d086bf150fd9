"""`loopgram bench --quick`: every figure is a positive value over a positive baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.bench import FIGURES

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_one_json_document_and_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "INFO"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "bench", "--quick", "--json", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 120, f"bench --quick took {elapsed:.0f} s"

    document = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert set(document) == set(FIGURES)
    for name, figure in document.items():
        assert set(figure) == {"value", "unit", "baseline", "ratio"}, name
        assert figure["value"] > 0 and figure["baseline"] > 0, name
        assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline"], rel=1e-4)
        assert isinstance(figure["unit"], str) and figure["unit"], name

    assert json.loads((out / "bench.json").read_text(encoding="utf-8")) == document
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
