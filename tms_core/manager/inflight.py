"""Consolidation moves under way: which lease loads on which target while its source serves.

Kept in memory only: a restart abandons them, and the settle then unloads what no lease
wants. Placement reads them too: a target's room is taken from the start of a move, and a
source being emptied takes no new lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tms_core.domain import Lease
from tms_core.ids import LeaseId, ServerId


@dataclass
class Move:
    """A consolidation move under way: the lease loads on `target` while `source` serves."""

    source: ServerId
    target: ServerId
    started_at: float


@dataclass
class MovesInFlight:
    moves: dict[LeaseId, Move] = field(default_factory=dict)
    incoming: dict[ServerId, dict[LeaseId, Lease]] = field(default_factory=dict)
    """The leases loading on each target."""
    draining: dict[ServerId, int] = field(default_factory=dict)
    """How many moves leave each source."""

    def begin(self, lease: Lease, source: ServerId, target: ServerId, now: float) -> None:
        self.moves[lease.id] = Move(source, target, now)
        self.incoming.setdefault(target, {})[lease.id] = lease
        self.draining[source] = self.draining.get(source, 0) + 1

    def end(self, lease_id: LeaseId) -> Move:
        move = self.moves.pop(lease_id)
        incoming = self.incoming.get(move.target, {})
        incoming.pop(lease_id, None)
        if not incoming:
            self.incoming.pop(move.target, None)
        left = self.draining.get(move.source, 0) - 1
        if left > 0:
            self.draining[move.source] = left
        else:
            self.draining.pop(move.source, None)
        return move

    def clear(self) -> list[ServerId]:
        """Drops every move; returns the targets (whose sidecars should unload them)."""
        targets = list(self.incoming)
        self.moves.clear()
        self.incoming.clear()
        self.draining.clear()
        return targets
