"""`loopgram worker`, as the CLI starts it, with the broker's visibility timeout shortened.

Run as a script by `tests/faults/conftest.py:start_worker`; arguments go to Celery
(`-Q feedback -c 1 -P solo` by default). FAULTS_VISIBILITY_TIMEOUT (seconds) replaces the
production hour after which Redis re-delivers a message whose worker died before acking.
"""

from __future__ import annotations

import os
import sys

from workers.celery_app import celery_app

if __name__ == "__main__":
    visibility = os.environ.get("FAULTS_VISIBILITY_TIMEOUT")
    if visibility:
        options = dict(celery_app.conf.broker_transport_options or {})
        options["visibility_timeout"] = float(visibility)
        # Sweep for such messages every second (production: about every 100 s), and let a
        # sweep lock left by a killed worker expire in seconds rather than five minutes.
        options["unacked_restore_interval"] = 1
        options["unacked_restore_throttle"] = 1
        options["unacked_mutex_expire"] = 3
        celery_app.conf.broker_transport_options = options
    args = sys.argv[1:] or ["-Q", "feedback", "-c", "1", "-P", "solo"]
    celery_app.worker_main(["worker", "--loglevel", "INFO", "--without-mingle", *args])
