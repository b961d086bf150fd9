"""`loopgram db upgrade`: Alembic from code, so it works from any working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from loopgram.db import normalise_url
from loopgram.settings import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = normalise_url(settings.database_url)
    return config


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    from loopgram.db import make_engine

    make_engine(settings).dispose()  # creates the SQLite folder when needed
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: DatabaseSettings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings), revision)
