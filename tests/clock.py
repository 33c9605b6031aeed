"""A monotonic clock that moves only when a test says so, for adapters and services that take ``clock``.

Tests of ttls, windows and caches advance it explicitly instead of sleeping: the outcome does not depend on
how busy the machine is, and the test takes no time.
"""

from __future__ import annotations


class ManualClock:
    """``clock()`` reads the time (seconds); ``advance(s)`` moves it forward. Starts away from 0, as
    ``time.monotonic`` does, so code that treats 0 as "never" is not fooled."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds
