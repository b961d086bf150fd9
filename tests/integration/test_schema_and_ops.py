"""Alembic is the schema authority; compose.yaml and the CLI agree with the settings."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import loopgram.models  # noqa: F401
from loopgram.cli import app as cli_app
from loopgram.db import Database
from loopgram.settings import DatabaseSettings, known_env_vars

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_migrated_postgres_matches_the_models(pg_url: str) -> None:
    db = Database.from_settings(DatabaseSettings(database_url=pg_url))
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    db.dispose()
    assert diff == []


def test_migrated_sqlite_matches_the_models(sqlite_url: str) -> None:
    db = Database.from_settings(DatabaseSettings(database_url=sqlite_url))
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    db.dispose()
    assert diff == []


def _cli_commands() -> set[str]:
    import typer.main

    group = typer.main.get_group(cli_app)
    names: set[str] = set()
    for name, command in group.commands.items():
        names.add(name)
        for sub in getattr(command, "commands", {}):
            names.add(f"{name} {sub}")
    return names


def test_compose_services_use_real_commands_and_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "qdrant",
        "vllm",
        "migrate",
        "bot",
        "worker",
        "beat",
        "flower",
    } <= set(services)
    commands = _cli_commands()
    known = known_env_vars()
    project_services = [
        n for n, s in services.items() if "build" in s or "loopgram" in str(s.get("image", ""))
    ]
    assert {"migrate", "bot", "worker", "beat"} <= set(project_services)
    for name in project_services:
        service = services[name]
        command = service.get("command")
        words = command.split() if isinstance(command, str) else list(command or ["run"])
        head = " ".join(w for w in words[:2] if not w.startswith("-"))
        assert head in commands or words[0] in commands, (
            f"{name}: {command!r} is no loopgram command"
        )
        env = service.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        unknown = set(names) - known
        assert not unknown, f"{name} sets variables the settings do not know: {unknown}"
        for check in (service.get("healthcheck") or {}).get("test", [])[1:2]:
            if check == "loopgram":
                sub = service["healthcheck"]["test"][2]
                assert sub in commands, f"{name}: healthcheck uses unknown command {sub}"
        for dep, cond in (service.get("depends_on") or {}).items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
            assert dep in services
    # Nothing reachable from outside runs with a default password.
    text = (ROOT / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD:-" not in text


def test_compose_vllm_keeps_every_served_adapter_in_memory() -> None:
    """The registry keeps each assistant's active adapter and canary loaded (and unloads the
    rest); vLLM's host-memory cache must hold them all, as the built-in server does."""
    from loopgram.assistants import ASSISTANTS
    from training.model_server.protocol import DEFAULT_MAX_LORAS

    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["vllm"]["command"]
    cached = int(command[command.index("--max-cpu-loras") + 1])
    batched = int(command[command.index("--max-loras") + 1])
    assert cached >= len(ASSISTANTS) * 2 and cached >= batched
    assert cached == DEFAULT_MAX_LORAS


def test_env_example_documents_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }
    missing = known_env_vars() - documented
    assert not missing, f".env.example lacks {sorted(missing)}"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "loopgram.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        cwd=os.getcwd(),
    )


def test_run_without_token_says_how_to_get_one() -> None:
    result = _cli("run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "@BotFather" in lines[0] and "Traceback" not in result.stderr


def test_cli_errors_are_one_line() -> None:
    result = _cli("feedback", "export", "--format", "xml")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: unknown format")
    result = _cli("feedback", "export", "--since", "yesterday")
    assert result.returncode == 2 and "ISO date" in result.stderr
    result = _cli("train", "--assistant", "nobody")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown assistant")


def test_commands_on_an_unmigrated_or_unreachable_database_say_so_in_one_line(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    document = tmp_path / "a.txt"
    document.write_text("Loopgram answers in Telegram.", encoding="utf-8")
    unmigrated = {"DATABASE_URL": f"sqlite:///{empty}", "DATA_DIR": str(tmp_path / "data")}
    for args in (("kb", "ingest", str(document)), ("feedback", "export"), ("adapters", "list")):
        result = _cli(*args, env=unmigrated)
        last = result.stderr.strip().splitlines()[-1]  # after the log lines, if any
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
        assert last.startswith("error: the database is not migrated (no such table: ")
        assert last.endswith("run `loopgram db upgrade`")
    down = {"DATABASE_URL": "postgresql://loopgram:s3cret-pw@127.0.0.1:9/loopgram"}
    for args in (("feedback", "export"), ("adapters", "list")):
        result = _cli(*args, env=down)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error: database unreachable: ")
        assert "s3cret-pw" not in result.stderr


def test_db_upgrade_and_export_on_a_fresh_sqlite(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    assert _cli("db", "upgrade", env=env).returncode == 0
    result = _cli("feedback", "export", "--format", "csv", env=env)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("interaction_id,user_id,chat_id,assistant")
