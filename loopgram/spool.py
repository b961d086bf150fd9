"""A local append-only spool for feedback that could not be enqueued nor written.

When both the broker and the database are unreachable, a rating is appended here (fsync'd)
and replayed later, so a press is never lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, payload: dict[str, Any]) -> None:
        self.extend([payload])

    def extend(self, payloads: list[dict[str, Any]]) -> None:
        """Append several payloads with one write and one fsync."""
        if not payloads:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in payloads)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning("spool.append path=%s count=%d", self.path, len(payloads))

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._lock, self.path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())

    def replay(self, deliver: Callable[[dict[str, Any]], None]) -> int:
        """Deliver spooled payloads in order; stop at the first failure and keep the rest."""
        with self._lock:
            if not self.path.exists():
                return 0
            lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            delivered = 0
            try:
                for line in lines:
                    try:
                        payload = json.loads(line)
                    except json.JSONDecodeError:
                        log.error("spool.corrupt_line dropped=%r", line[:200])
                        delivered += 1
                        continue
                    deliver(payload)
                    delivered += 1
            except Exception as exc:
                log.warning("spool.replay_stopped delivered=%s error=%s", delivered, exc)
            rest = lines[delivered:]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{ln}\n" for ln in rest), encoding="utf-8")
            os.replace(tmp, self.path)
            return delivered
