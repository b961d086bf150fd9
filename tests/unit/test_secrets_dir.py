"""Settings from a secrets folder (SECRETS_DIR): Docker / Kubernetes secrets as files."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopgram.settings import Settings


def test_secrets_come_from_files_when_the_environment_lacks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "telegram_bot_token").write_text("123:from-a-file\n", "utf-8")
    (tmp_path / "llm_api_key").write_text("sk-file", "utf-8")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("LLM_API_KEY", "sk-env")  # the environment wins
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = Settings.load()
    token = settings.telegram.telegram_bot_token
    assert token is not None and token.get_secret_value() == "123:from-a-file"
    key = settings.llm.llm_api_key
    assert (key.get_secret_value() if hasattr(key, "get_secret_value") else key) == "sk-env"


def test_a_missing_secrets_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="is not a folder"):
        Settings.load()
