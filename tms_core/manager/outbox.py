"""The outbox: what a change tells the world, held until the change is committed.

Events for watchers, wake-ups of lease followers and of sidecars (their assignment changed),
the published state (routes, Kubernetes Services) and the reconciler's "a deadline moved" are
all queued here while a change is open and delivered only once it has reached the store, so
nobody sees what a failed commit rolls back. Outside a change they go out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tms_core.events import EventLog
from tms_core.ids import LeaseId, ServerId


class Signal:
    """A broadcast 'something changed' that waiters can await without missing a change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event


_EventArgs = tuple[str, str, str, str, str, str, tuple[int, int]]


class Outbox:
    def __init__(
        self,
        events: EventLog,
        *,
        publish: Callable[[], None],
        assignment_changed: Callable[[ServerId], None],
    ) -> None:
        self.events = events
        self._publish = publish
        self._assignment_hook = assignment_changed
        self._lease_signals: dict[LeaseId, Signal] = {}
        self._assignment_signals: dict[ServerId, Signal] = {}
        self._generations: dict[ServerId, int] = {}
        self.deadlines_changed = asyncio.Event()
        """Set whenever a deadline (expiry, idle grace, start timeout) may have moved."""
        self._holding = False
        self._events: list[_EventArgs] = []
        self._leases: dict[LeaseId, bool] = {}
        self._bumps: dict[ServerId, None] = {}
        self._forgets: dict[ServerId, None] = {}
        self._publish_wanted = False
        self._deadlines = False

    # ------------------------------------------------------------------ queueing

    def event(
        self,
        kind: str,
        subject: str,
        state: str,
        reason: str = "",
        *,
        lease_id: str = "",
        server_id: str = "",
        progress: tuple[int, int] = (0, 0),
    ) -> None:
        self._events.append((kind, subject, state, reason, lease_id, server_id, progress))
        self._deliver_unless_held()

    def lease_changed(self, lease_id: LeaseId, *, ended: bool) -> None:
        """Wakes the lease's followers; an ended lease's followers get this last word."""
        self._leases[lease_id] = self._leases.get(lease_id, False) or ended
        self._deliver_unless_held()

    def assignment_changed(self, server_id: ServerId) -> None:
        """The models `server_id` should hold changed: its sidecar is woken to fetch them."""
        self._bumps[server_id] = None
        self._deliver_unless_held()

    def state_changed(self) -> None:
        """What stable addresses are computed from changed (leases, names, servers)."""
        self._publish_wanted = True
        self._deliver_unless_held()

    def deadline_moved(self) -> None:
        self._deadlines = True
        self._deliver_unless_held()

    # ------------------------------------------------------------------ waiting

    def lease_waiter(self, lease_id: LeaseId) -> asyncio.Event:
        return self._lease_signals.setdefault(lease_id, Signal()).waiter()

    def assignment_waiter(self, server_id: ServerId) -> asyncio.Event:
        return self._assignment_signals.setdefault(server_id, Signal()).waiter()

    def generation(self, server_id: ServerId) -> int:
        return self._generations.get(server_id, 0)

    def forget_server(self, server_id: ServerId) -> None:
        """A stopped server's sidecar is woken one last time and then forgotten."""
        self._forgets[server_id] = None
        self._deliver_unless_held()

    # ------------------------------------------------------------------ delivery

    def hold(self) -> None:
        assert not self._holding, "changes do not nest"
        self._holding = True

    def release(self, *, committed: bool) -> None:
        """Ends a change: delivers what it queued if it was committed, else drops it."""
        self._holding = False
        if committed:
            self._deliver()
        else:
            self._events.clear()
            self._leases.clear()
            self._bumps.clear()
            self._forgets.clear()
            self._publish_wanted = self._deadlines = False

    def _deliver_unless_held(self) -> None:
        if not self._holding:
            self._deliver()

    def _deliver(self) -> None:
        # Addresses first: whoever is woken by READY may call the lease's address at once.
        if self._publish_wanted:
            self._publish_wanted = False
            self._publish()
        events, self._events = self._events, []
        for kind, subject, state, reason, lease_id, server_id, progress in events:
            self.events.emit(
                kind,
                subject,
                state,
                reason,
                lease_id=lease_id,
                server_id=server_id,
                progress=progress,
            )
        leases, self._leases = self._leases, {}
        for lease_id, ended in leases.items():
            signal = (
                self._lease_signals.pop(lease_id, None)
                if ended
                else self._lease_signals.get(lease_id)
            )
            if signal is not None:
                signal.fire()
        bumps, self._bumps = self._bumps, {}
        for server_id in bumps:
            self._generations[server_id] = self._generations.get(server_id, 0) + 1
            signal = self._assignment_signals.get(server_id)
            if signal is not None:
                signal.fire()
            self._assignment_hook(server_id)
        forgets, self._forgets = self._forgets, {}
        for server_id in forgets:
            gone = self._assignment_signals.pop(server_id, None)
            if gone is not None:
                gone.fire()
            self._generations.pop(server_id, None)
        if self._deadlines:
            self._deadlines = False
            self.deadlines_changed.set()
