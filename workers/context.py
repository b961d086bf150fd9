"""Per-process resources of the worker, created after fork (never inherited from a parent)."""

from __future__ import annotations

import os
import threading

from loopgram.db import Database
from loopgram.settings import Settings

_lock = threading.Lock()
_db: Database | None = None
_settings: Settings | None = None
_owner_pid = os.getpid()


def use_settings(settings: Settings | None) -> None:
    """Inject the settings the embedded stack runs with (e.g. the model server's actual port,
    when it was started on a free one), instead of reading the environment again."""
    global _settings
    with _lock:
        _settings = settings


def get_settings() -> Settings:
    with _lock:
        return _settings if _settings is not None else Settings.load()


def use_database(db: Database | None) -> None:
    """Inject the database (the embedded worker shares the bot's engine)."""
    global _db, _owner_pid
    with _lock:
        _db = db
        _owner_pid = os.getpid()


def get_db() -> Database:
    global _db, _owner_pid
    with _lock:
        if _db is None:
            _db = Database.from_settings((_settings or Settings.load()).db)
            _owner_pid = os.getpid()
        return _db


def reset_after_fork() -> None:
    """Drop an engine inherited from a parent process; the solo pool (same process) keeps it."""
    global _db
    with _lock:
        if _db is not None and os.getpid() != _owner_pid:
            _db = None
