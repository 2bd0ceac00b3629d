"""The audit log: every state-changing call and every refused call, who, what, when, outcome.

Records are buffered and written together every `FLUSH_S` (and at shutdown), so auditing
adds no store commit to a renewal; a daemon killed with SIGKILL may lose the last fraction of
a second of them. No credential ever reaches a record: the interceptor records the token's
name, never the token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from tms_core.domain import AuditRecord

FLUSH_S = 0.2
MAX_BUFFERED = 10_000

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, write: Callable[[Sequence[AuditRecord]], Awaitable[None]]) -> None:
        self._write = write
        self._buffer: list[AuditRecord] = []
        self._wake = asyncio.Event()
        self.dropped = 0

    def record(self, record: AuditRecord) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            # A flood of refused calls must not take the daemon's memory: count, say so.
            self.dropped += 1
            return
        self._buffer.append(record)
        self._wake.set()

    async def flush(self) -> None:
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        try:
            await self._write(records)
        except Exception:
            log.exception("could not write %d audit records", len(records))
            self._buffer[:0] = records[: MAX_BUFFERED - len(self._buffer)]

    async def run(self) -> None:
        """Writes what was recorded, at most every FLUSH_S; flushes once more when stopped."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(FLUSH_S)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
