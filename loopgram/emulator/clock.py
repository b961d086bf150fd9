"""A clock that tests can move forward, so that timeouts (callback query age, flood windows)
can be exercised without sleeping."""

import time


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def now(self) -> float:
        """Unix time, shifted like :meth:`monotonic`."""
        return time.time() + self._offset

    def unix(self) -> int:
        """Unix time in whole seconds, as Telegram puts it in ``date`` fields."""
        return int(self.now())

    def advance(self, seconds: float) -> None:
        self._offset += seconds
