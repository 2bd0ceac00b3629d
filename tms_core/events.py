"""The event log: every lease, model, server, name and pool state change, with its reason.

Kept in memory (the last `keep` events) and streamed to watchers (`tms events -f`, the
consoles). A watcher that falls too far behind is dropped and may reconnect with the last
sequence number it saw.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tms_core.clock import Clock


@dataclass(frozen=True)
class Event:
    seq: int
    at: float
    kind: str
    id: str
    state: str
    reason: str = ""
    lease_id: str = ""
    server_id: str = ""
    bytes_done: int = 0
    """A model's FETCHING progress: bytes downloaded so far, of `bytes_total`."""
    bytes_total: int = 0


class WatcherTooSlow(Exception):
    pass


class EventLog:
    def __init__(self, clock: Clock, *, keep: int = 10_000, backlog: int = 10_000) -> None:
        self._clock = clock
        self._kept: collections.deque[Event] = collections.deque(maxlen=keep)
        self._watchers: set[asyncio.Queue[Event | None]] = set()
        self._backlog = backlog
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(
        self,
        kind: str,
        subject: str,
        state: str,
        reason: str = "",
        *,
        lease_id: str = "",
        server_id: str = "",
        progress: tuple[int, int] = (0, 0),
    ) -> Event:
        self._seq += 1
        event = Event(
            self._seq,
            self._clock.now(),
            kind,
            subject,
            state,
            reason,
            lease_id,
            server_id,
            *progress,
        )
        self._kept.append(event)
        for queue in list(self._watchers):
            if queue.qsize() >= self._backlog:
                self._watchers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)
        return event

    def kept(self, since_seq: int = 0) -> list[Event]:
        return [e for e in self._kept if e.seq > since_seq]

    async def watch(
        self, *, since_seq: int = 0, replay: bool = True, follow: bool = True
    ) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            last = since_seq
            if replay:
                for event in self.kept(since_seq):
                    last = event.seq
                    yield event
            while follow:
                received = await queue.get()
                if received is None:
                    raise WatcherTooSlow(f"watcher fell {self._backlog} events behind")
                if received.seq > last:
                    last = received.seq
                    yield received
        finally:
            self._watchers.discard(queue)
