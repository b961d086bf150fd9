"""A worker started by another process (`loopgram run`'s training worker) dies with it.

Without this, killing the bot hard leaves the training worker finishing an hour-long run for
nobody (its warm shutdown waits for the task). The next run marks an interrupted one failed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "LOOPGRAM_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit now if it already has."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != expected:  # the parent died before the request took effect
        os._exit(1)
