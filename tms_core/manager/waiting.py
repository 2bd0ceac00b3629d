"""The waiting room: the PENDING leases, arranged by what would let them go anywhere.

A lease on GPUs, outside a pool, can be placed only where one GPU has its share of memory
free (its declared memory over its GPU count), unless a server already holds one of its
models (joining it adds less). So when room frees up, the placer asks only the leases whose
share fits in the largest free GPU, and those whose models a server holds, instead of every
waiting lease on every release and report (`Placer.place_pending`). Shares come from the
declared memory, never more than what placement counts (the larger of declared and
measured), so no lease that could go is passed over. The other leases (CPU servers, pools,
whose room is memory per server and quota) are asked every time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from tms_core.domain import Lease
from tms_core.ids import LeaseId

ModelKey = tuple[str, str]
_Entry = tuple[float, float, LeaseId]


def share_of(lease: Lease) -> float | None:
    """Bytes one GPU must have free for the lease to go anywhere without a model it shares;
    None where no such bound holds (CPU leases, pool leases)."""
    gpus = lease.constraints.gpus
    if gpus <= 0 or lease.pool:
        return None
    return sum(m.memory_bytes for m in lease.models) / gpus


class WaitingRoom:
    def __init__(self) -> None:
        self._by_share: list[_Entry] = []
        """(share, created_at, lease) of the bounded leases, smallest share first."""
        self._entries: dict[LeaseId, _Entry] = {}
        self._leases: dict[LeaseId, Lease] = {}
        self.unbounded: dict[LeaseId, Lease] = {}
        """Waiting leases asked whenever anything frees up."""
        self._by_model: dict[ModelKey, dict[LeaseId, Lease]] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def add(self, lease: Lease) -> None:
        if lease.id in self._leases:
            return
        self._leases[lease.id] = lease
        share = share_of(lease)
        if share is None:
            self.unbounded[lease.id] = lease
        else:
            entry = (share, lease.created_at, lease.id)
            self._entries[lease.id] = entry
            bisect.insort(self._by_share, entry)
        for model in lease.models:
            self._by_model.setdefault((str(model.name), model.uri), {})[lease.id] = lease

    def remove(self, lease: Lease) -> None:
        if self._leases.pop(lease.id, None) is None:
            return
        self.unbounded.pop(lease.id, None)
        entry = self._entries.pop(lease.id, None)
        if entry is not None:
            at = bisect.bisect_left(self._by_share, entry)
            if at < len(self._by_share) and self._by_share[at] == entry:
                del self._by_share[at]
        for model in lease.models:
            key = (str(model.name), model.uri)
            waiting = self._by_model.get(key)
            if waiting is not None:
                waiting.pop(lease.id, None)
                if not waiting:
                    del self._by_model[key]

    def within(self, room: float) -> Iterator[Lease]:
        """The bounded leases whose share is at most `room`."""
        end = bisect.bisect_right(self._by_share, (room, float("inf"), LeaseId("~")))
        for _, _, lease_id in self._by_share[:end]:
            yield self._leases[lease_id]

    def models(self) -> list[ModelKey]:
        return list(self._by_model)

    def wanting(self, key: ModelKey) -> list[Lease]:
        """The waiting leases that ask for the model `key`."""
        return list(self._by_model.get(key, {}).values())
