"""`loopgram label FILE` as the CLI calls it: the real server in a thread, a migrated SQLite
database for the active adapter and the confirmed examples."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopgram import labeling
from loopgram.db import Database
from loopgram.label_command import default_out, label_command
from loopgram.models import Adapter, AdapterStatus
from loopgram.settings import Settings
from tests.label_model import LabelingBackend, model_server_thread

MakeSettings = Callable[..., Settings]


@pytest.fixture
def backend() -> LabelingBackend:
    return LabelingBackend()


@pytest.fixture
def model_url(backend: LabelingBackend) -> Iterator[str]:
    with model_server_thread(backend) as url:
        yield url


@pytest.fixture
def make_settings(settings_factory: MakeSettings, model_url: str) -> MakeSettings:
    def make(**env: str) -> Settings:
        env.setdefault("LLM_BASE_URL", model_url)
        env.setdefault("LLM_TIMEOUT", "10")
        env.setdefault("LLM_FIRST_TOKEN_TIMEOUT", "5")
        env.setdefault("EMBEDDING_MODEL", "hashing")
        return settings_factory(**env)

    return make


def run(file: Path, settings: Settings, **options: object) -> int:
    defaults: dict[str, object] = {
        "out": None,
        "column": None,
        "labels": None,
        "lang": "en",
        "restart": False,
        "as_json": False,
    }
    return label_command(file, settings=settings, **{**defaults, **options})  # type: ignore[arg-type]


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig"), newline="")))


@pytest.fixture
def items(tmp_path: Path) -> Path:
    path = tmp_path / "items.csv"
    path.write_text("id,comment\n1,a question\n2,a complaint\n3,\n4,unsure praise\n", "utf-8")
    return path


def test_json_summary_and_default_out(
    items: Path, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(items, make_settings(), as_json=True) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    out = default_out(items)
    assert out == tmp_path / "items.labeled.csv"
    assert report == {
        "rows": 4,
        "labeled": 3,
        "needs_review": 2,
        "invalid": 0,
        "skipped": 1,
        "labels": {"complaint": 1, "praise": 1, "question": 1},
        "out": str(out),
        "seconds": report["seconds"],
        "resumed": 0,
    }
    assert [r["label"] for r in rows_of(out)] == ["question", "complaint", "", "praise"]
    assert "labeling 4 rows of column 'comment' with loopgram-base" in captured.err
    # No database was there: none is created by labeling a file.
    assert not (tmp_path / "data").exists()


def test_text_summary_custom_labels_and_russian_prompt(
    items: Path,
    make_settings: MakeSettings,
    backend: LabelingBackend,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text("name: support\nlabels:\n  question: asks\n  complaint: unhappy\n", "utf-8")
    out = tmp_path / "result.xlsx"
    code = run(items, make_settings(), out=out, labels=labels, lang="ru", column="Comment")
    assert code == 0
    printed = capsys.readouterr().out
    assert f"into {out}" in printed
    assert "labeled 2, needs review 2, invalid 1, skipped 1" in printed
    assert (
        "Метки:\n- question: asks\n- complaint: unhappy"
        in backend.requests[0].messages[0]["content"]
    )
    assert out.exists()


def test_the_active_adapter_and_confirmed_examples_are_used(
    items: Path, make_settings: MakeSettings, backend: LabelingBackend, sqlite_url: str
) -> None:
    db = Database.from_settings(make_settings(DATABASE_URL=sqlite_url).db)

    def seed(*, session: object) -> None:
        session.add(  # type: ignore[attr-defined]
            Adapter(
                assistant="label",
                version=1,
                name="label-v1",
                path="/adapters/label-v1",
                base_model="loopgram-base",
                method="dpo",
                status=AdapterStatus.active,
            )
        )
        labeling.confirm_label(
            session=session,  # type: ignore[arg-type]
            label_set_id=None,
            text="the app keeps crashing",
            label="complaint",
            source="review",
        )

    db.call(seed)
    db.dispose()
    assert run(items, make_settings(DATABASE_URL=sqlite_url)) == 0
    assert {request.model for request in backend.requests} == {"label-v1"}
    contents = [m["content"] for m in backend.requests[0].messages]
    assert "the app keeps crashing" in contents
    assert '{"label": "complaint", "confidence": 1.0, "reason": ""}' in contents


def test_a_server_that_is_down_is_one_clear_line(
    items: Path, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "http://127.0.0.1:9/v1"
    assert run(items, make_settings(LLM_BASE_URL=url)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: the model server at {url} is not answering")
    assert "`loopgram serve-model`" in err
    assert "nothing was labeled" in err
    assert not default_out(items).exists()


def test_a_model_that_dies_midway_says_how_to_go_on_and_the_rerun_does(
    items: Path,
    make_settings: MakeSettings,
    backend: LabelingBackend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Rows are asked four at a time, so the crash is tied to rows, not to arrival order.
    backend.crash_on = {"a complaint", "unsure praise"}
    assert run(items, make_settings()) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 of 4 rows are saved in" in err and "run the same command again" in err
    backend.crash_on.clear()
    backend.asked.clear()
    assert run(items, make_settings(), as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] >= 1
    assert "a question" not in backend.asked
    assert [r["comment"] for r in rows_of(default_out(items))] == [
        "a question",
        "a complaint",
        "",
        "unsure praise",
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"lang": "de"}, "unknown language 'de'"),
        ({"file": "missing.csv"}, "no such file"),
        ({"out": "items.csv"}, "is the input file"),
        ({"column": "nope"}, "no column 'nope'; the columns are: id, comment"),
        ({"file": "items.xls"}, "must be .csv or .xlsx"),
        ({"labels": "labels.yaml"}, "not valid YAML"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    items: Path,
    make_settings: MakeSettings,
    capsys: pytest.CaptureFixture[str],
    setup: dict[str, str],
    message: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "items.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "labels.yaml").write_text("labels: [unclosed", "utf-8")
    options: dict[str, object] = dict(setup)
    file = tmp_path / str(options.pop("file", items.name))
    for key in ("out", "labels"):
        if key in options:
            options[key] = tmp_path / str(options[key])
    assert run(file, make_settings(), **options) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
