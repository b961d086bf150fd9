"""One training run (`training.pipeline.run_training`) in a process of its own, to be killed.

Arguments: a JSON object with database_url, data_dir, adapters_dir, model_path, llm_base_url,
redis_url (or null), lock_ttl (seconds, the Redis lock's; null: the default) and the
TrainConfig fields. Prints the run's report as JSON when it finishes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from loopgram.db import Database
from loopgram.logging_setup import setup_logging
from loopgram.settings import Settings
from tests.integration.test_adapters import RecordingServer
from training import lock
from training.config import TrainConfig
from training.pipeline import run_training

if __name__ == "__main__":
    setup_logging("INFO")  # as the training worker logs: each step is a `training.step` line
    spec = json.loads(sys.argv[1])
    os.environ.update(
        {
            "DATABASE_URL": spec.pop("database_url"),
            "DATA_DIR": spec.pop("data_dir"),
            "ADAPTERS_DIR": spec.pop("adapters_dir"),
            "LLM_BASE_URL": spec.pop("llm_base_url"),
            "EMBEDDING_MODEL": "hashing",
        }
    )
    redis_url = spec.pop("redis_url")
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    ttl = spec.pop("lock_ttl")
    if ttl:
        lock.DEFAULT_TTL_SECONDS = ttl
    model_path = Path(spec.pop("model_path"))
    settings = Settings.load()
    db = Database.from_settings(settings.db)
    report = run_training(
        settings=settings,
        config=TrainConfig(**spec),
        db=db,
        server=RecordingServer(),
        model_path=model_path,
    )
    print(json.dumps(report.as_dict()), flush=True)
