"""`eval_command`, as the CLI calls it: settings from the environment, the adapter registry
in the database, the model server at LLM_BASE_URL (the fake labeling model in a thread)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from loopgram import adapters
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.evaluation.command import eval_command
from loopgram.models import Adapter, AdapterStatus
from loopgram.settings import DatabaseSettings, Settings
from tests.label_model import LabelingBackend, model_server_thread

MakeSettings = Callable[..., Settings]


def activate(database_url: str, assistant: str, versions: int = 1) -> str:
    """Register `versions` adapters and make the last one active; its name."""

    def work(*, session: Session) -> str:
        adapter: Adapter | None = None
        for _ in range(versions):
            adapter = adapters.register(
                session=session,
                assistant=assistant,
                path="/nowhere/adapter",
                base_model="loopgram-base",
                method="dpo",
            )
        assert adapter is not None
        adapter.status = AdapterStatus.active
        session.add(adapter)
        return adapter.name

    db = Database.from_settings(DatabaseSettings(database_url=database_url))
    try:
        return db.call(work)
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_for(settings_factory: MakeSettings, database_url: str, model_url: str) -> Settings:
    return settings_factory(
        DATABASE_URL=database_url,
        LLM_BASE_URL=model_url,
        LLM_FIRST_TOKEN_TIMEOUT="5",
        LLM_TIMEOUT="10",
    )


def run(settings: Settings, assistant: str = "label", **options: Any) -> int:
    options.setdefault("as_json", True)
    options.setdefault("limit", 6)
    options.setdefault("max_tokens", None)
    return eval_command(assistant, settings=settings, **options)


def test_json_document_with_the_active_adapter(
    settings_factory: MakeSettings, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = activate(sqlite_url, "label")
    backend = LabelingBackend()  # serves loopgram-base and label-v1
    with model_server_thread(backend) as url:
        code = run(settings_for(settings_factory, sqlite_url, url))
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)  # exactly one document on stdout
    assert out.count("\n") == 1
    assert doc["assistant"] == "label" and doc["adapter"] == name == "label-v1"
    assert doc["items"] == 6
    assert {"accuracy", "kappa", "macro_f1", "invalid_rate", "needs_human_rate"} <= set(
        doc["metrics"]
    )
    assert set(doc["base_metrics"]) >= {"accuracy", "kappa"}
    assert all(isinstance(value, float) for value in doc["metrics"].values())
    # both the base model and the adapter were asked every item (plus repair turns)
    assert len(backend.asked) >= 12


def test_table_without_adapter_and_without_a_database(
    settings_factory: MakeSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here" / "loopgram.db"
    with model_server_thread(LabelingBackend()) as url:
        settings = settings_for(settings_factory, f"sqlite:///{missing}", url)
        code = run(settings, "moderate", as_json=False, limit=3)
    captured = capsys.readouterr()
    assert code == 0
    assert "accuracy" in captured.out and "none active" in captured.out
    assert not missing.exists()  # evaluating does not create a database


def test_server_down_is_one_clear_line(settings_factory: MakeSettings, sqlite_url: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = settings_for(settings_factory, sqlite_url, url)
    with pytest.raises(LoopgramError) as raised:
        run(settings, "paraphrase")
    message = str(raised.value)
    assert url in message and "loopgram serve-model" in message
    assert "\n" not in message


def test_model_not_served(settings_factory: MakeSettings, sqlite_url: str) -> None:
    with model_server_thread(LabelingBackend()) as url:
        settings = settings_factory(DATABASE_URL=sqlite_url, LLM_BASE_URL=url, LLM_MODEL="big")
        with pytest.raises(LoopgramError, match=r"does not serve 'big'.*loopgram-base"):
            run(settings)


def test_active_adapter_the_server_cannot_load(
    settings_factory: MakeSettings, sqlite_url: str
) -> None:
    name = activate(sqlite_url, "label", versions=2)  # label-v2: not served by the fake
    with model_server_thread(LabelingBackend()) as url:
        settings = settings_for(settings_factory, sqlite_url, url)
        with pytest.raises(LoopgramError, match=f"{name} is the active adapter of label"):
            run(settings)


@pytest.mark.parametrize(
    ("assistant", "options", "message"),
    [
        ("poet", {}, "unknown assistant 'poet'.*paraphrase, summarize, moderate, label"),
        ("chat", {}, "'chat' has no evaluation set"),
        ("label", {"limit": 0}, "--limit must be at least 1"),
        ("label", {"max_tokens": 0}, "--max-tokens must be at least 1"),
        ("paraphrase", {"max_rewrite_length": 0.2}, "--max-rewrite-length: .*between 0.5"),
        ("label", {"max_rewrite_length": 1.0}, "--max-rewrite-length applies to paraphrase only"),
    ],
)
def test_bad_input(
    settings_factory: MakeSettings,
    sqlite_url: str,
    assistant: str,
    options: dict[str, Any],
    message: str,
) -> None:
    settings = settings_for(settings_factory, sqlite_url, "http://127.0.0.1:9/v1")
    with pytest.raises(LoopgramError, match=message):
        run(settings, assistant, **options)


def test_unmigrated_database_is_a_clear_error(
    settings_factory: MakeSettings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    settings = settings_for(settings_factory, f"sqlite:///{empty}", "http://127.0.0.1:9/v1")
    with pytest.raises(LoopgramError, match="loopgram db upgrade"):
        run(settings)


def test_the_rewrite_bound_is_the_gates_unless_given(
    settings_factory: MakeSettings, tmp_path: Path
) -> None:
    """`loopgram eval` judges paraphrases by the bound TRAIN_CONFIG gives the gate's task
    check, so its ok rate is the one the gate compares; a broken file is one clear line."""
    from loopgram.evaluation.command import deployment_rewrite_bound
    from loopgram.evaluation.metrics import MAX_REWRITE_LENGTH

    assert deployment_rewrite_bound(settings_factory()) == MAX_REWRITE_LENGTH
    config = tmp_path / "train.yaml"
    config.write_text("task_max_rewrite_length: 1.0\n", encoding="utf-8")
    assert deployment_rewrite_bound(settings_factory(TRAIN_CONFIG=str(config))) == 1.0
    config.write_text("task_max_rewrite_length: 0.1\n", encoding="utf-8")
    with pytest.raises(LoopgramError, match=r"TRAIN_CONFIG .*train.yaml: .*between 0\.5 and 10"):
        deployment_rewrite_bound(settings_factory(TRAIN_CONFIG=str(config)))
    config.write_text("task_max_rewrite_length: [1\n", encoding="utf-8")
    with pytest.raises(LoopgramError, match="TRAIN_CONFIG"):
        deployment_rewrite_bound(settings_factory(TRAIN_CONFIG=str(config)))
