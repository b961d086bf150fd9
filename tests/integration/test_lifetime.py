"""The training worker `loopgram run` starts does not outlive it, even after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")

PARENT = """
import os, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c",
     "import time; from workers.lifetime import die_with_parent; die_with_parent(); "
     "print('ready', flush=True); time.sleep(120)"],
    env={**os.environ, "LOOPGRAM_PARENT_PID": str(os.getpid())},
    stdout=subprocess.PIPE, text=True,
)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
import time; time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:  # reaped meanwhile
        return False


def test_the_worker_is_killed_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)


def test_without_a_parent_to_follow_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.lifetime import die_with_parent

    monkeypatch.delenv("LOOPGRAM_PARENT_PID", raising=False)
    die_with_parent()  # a standalone worker (production) is left alone
