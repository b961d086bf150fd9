"""loopgram core: settings, database, records, LLM client, feedback logic and CLI.

This package imports neither aiogram nor celery; the bot, the workers and the training
code depend on it, never the other way round.
"""

__version__ = "0.1.0"
