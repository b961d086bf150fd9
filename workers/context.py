"""Per-process resources of the worker, created after fork (never inherited from a parent)."""

from __future__ import annotations

import os
import threading

from loopgram.db import Database
from loopgram.settings import Settings

_lock = threading.Lock()
_db: Database | None = None
_owner_pid = os.getpid()


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
            _db = Database.from_settings(Settings.load().db)
            _owner_pid = os.getpid()
        return _db


def reset_after_fork() -> None:
    """Drop an engine inherited from a parent process; the solo pool (same process) keeps it."""
    global _db
    with _lock:
        if _db is not None and os.getpid() != _owner_pid:
            _db = None
