"""A clock that moves only when a test moves it: for code that takes a ``clock``."""

from __future__ import annotations


class FakeClock:
    """Seconds, like ``time.monotonic``; starts at ``now``."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
