"""Renewals written in group commits: one writer, many waiters.

A renewal only moves a live lease's expiry forward. The facade changes it in memory under the
manager's lock and queues it here; the writer commits every renewal queued while the previous
commit ran in one statement (`extend_leases`: those two fields, never backwards), then
wakes their callers, which answer only then — a renewal is acknowledged once it is on disk,
as before. Renewals of one lease that meet in a group are written once. The manager's lock
is not held while a group commits, so renewals do not queue behind each other's disk writes,
and other changes go on meanwhile (they write whole rows, which carry the new expiry too).
Each group's RENEWED events and follower wake-ups go out after its commit, under the lock.

A group that fails to commit fails each of its callers; memory keeps the extension (the
lease lives at most as long as its holder asked), and the next write of the lease stores it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tms_core.domain import Lease
from tms_core.ids import LeaseId
from tms_core.store.protocol import StateStore

log = logging.getLogger(__name__)


class RenewalWriter:
    def __init__(
        self,
        store: StateStore,
        written: Callable[[list[LeaseId]], Awaitable[None]],
    ) -> None:
        """`written` is called after each group commits, with its leases (the facade
        announces them under its lock)."""
        self._store = store
        self._written = written
        self._pending: dict[LeaseId, tuple[float, float]] = {}
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0
        """Group commits so far (what tests and benchmarks read)."""

    def queue(self, lease: Lease) -> Awaitable[None]:
        """Queues the lease's new expiry; the result is done once it is committed."""
        self._pending[lease.id] = (lease.expires_at, lease.updated_at)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="renewal-writer")
        # A caller that gives up (its RPC cancelled) must not cancel the group's future.
        return asyncio.shield(self._next)

    async def _write(self) -> None:
        try:
            while self._pending:
                # One turn of the loop first: the renewals already read off the wire join
                # this group rather than each paying a trip to the database thread.
                await asyncio.sleep(0)
                group, self._pending = self._pending, {}
                done, self._next = self._next, None
                assert done is not None
                try:
                    await self._store.extend_leases(
                        [(lease_id, at, updated) for lease_id, (at, updated) in group.items()]
                    )
                except Exception as exc:
                    log.warning("renewals of %d leases not written: %s", len(group), exc)
                    done.set_exception(exc)
                    # Every caller may have given up: the error is not "never retrieved".
                    done.exception()
                    continue
                except BaseException:
                    done.cancel()
                    raise
                self.groups += 1
                # Announced before the callers answer: whoever renewed sees its RENEWED event.
                try:
                    await self._written(list(group))
                except Exception:
                    log.exception("announcing %d renewals failed", len(group))
                done.set_result(None)
        finally:
            # Stopped (the daemon is shutting down): nobody waits forever.
            if self._pending and self._next is not None:
                self._next.cancel()
                self._pending, self._next = {}, None

    async def close(self) -> None:
        """Finishes the group under way (the daemon stops the store after this)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
