"""scripts/task_check_study.py: the held-out rates it reads from a simulation report and the
re-scoring of saved answers at another length bound (no model needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from loopgram.evaluation.gate import task_check
from loopgram.evaluation.results import ItemRecord

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "task_check_study.py"


@pytest.fixture(scope="module")
def study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("task_check_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(item_id: str, source: str, output: str, similarity: float = 0.95) -> ItemRecord:
    return ItemRecord(
        id=item_id,
        lang="en",
        input=source,
        output=output,
        expected="en",
        ok=False,  # the study re-judges every answer
        details={"similarity": similarity},
    )


def test_measured_rates_take_the_first_measurement_and_every_control(study: ModuleType) -> None:
    report = {
        "baseline": {"thumbs_up_rate": 0.23},
        "rounds": [
            {"adapter": "paraphrase-v1", "thumbs_up_rate": 0.49},
            {"adapter": "paraphrase-v1", "thumbs_up_rate": 0.5},  # v2 rejected: v1 again
            {"adapter": None, "thumbs_up_rate": 0.23},
        ],
        "discarded": [{"adapter": "paraphrase-v2", "thumbs_up_rate": 0.01}],
        "shuffled_controls": [
            {"adapter": "paraphrase-shuffled-control", "thumbs_up_rate": 0.3},
            {"adapter": "paraphrase-shuffled-control-2", "thumbs_up_rate": 0.2},
        ],
    }
    assert study.measured_rates(report) == {
        "base": 0.23,
        "paraphrase-v1": 0.49,
        "paraphrase-v2": 0.01,
        "paraphrase-shuffled-control": 0.3,
        "paraphrase-shuffled-control-2": 0.2,
    }


def test_rescoring_moves_the_verdicts_with_the_bound(study: ModuleType) -> None:
    source = "The concert on Saturday is postponed until further notice."
    longer = "We are sorry to say that the concert planned for Saturday is now postponed."
    shorter = "Saturday's concert is postponed."
    long_answers = [_record(str(i), source, longer) for i in range(6)]
    short_answers = [_record(str(i), source, shorter) for i in range(6)]

    loose = study.rescore(long_answers, 2.0)
    tight = study.rescore(long_answers, 1.0)
    assert loose.metrics["ok_rate"] == 1.0
    assert tight.metrics["ok_rate"] == 0.0
    assert all(item.details["max_length_ratio"] == 1.0 for item in tight.items)
    # At the people's own bound the longer rewrites lose item by item, and the check fails them.
    check = task_check(tight, study.rescore(short_answers, 1.0), margin=0.05)
    assert (check.better_items, check.worse_items, check.passed) == (0, 6, False)
    assert task_check(loose, study.rescore(short_answers, 2.0), margin=0.05).passed


def test_saved_answers_load_back(study: ModuleType) -> None:
    record = _record("a", "Source text here.", "Rewritten text.")
    saved = {"items": {"base": [record.as_dict()]}}
    assert study.records_of(saved) == {"base": [record]}
