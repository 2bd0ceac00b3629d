"""Time, injected: the daemon uses the wall clock, tests and the simulator drive their own."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        """Returns at `deadline`, or earlier when `wake` is set."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        delay = deadline - self.now()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except TimeoutError:
            pass


class ManualClock:
    """A clock that moves only when told to; sleepers wake when it passes their deadline."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        while self._now < deadline and not wake.is_set():
            moved = self._moved
            waiters = {asyncio.ensure_future(moved.wait()), asyncio.ensure_future(wake.wait())}
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
