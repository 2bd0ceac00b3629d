"""Lease names: the records, and which names point (or will point) at each lease.

A name is a stable address that follows a lease; it is also a tag that other leases'
`colocate_with` and `avoid` match. The reverse indexes let placement read a lease's names and
a commit find the names waiting for a lease without scanning every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tms_core.domain import LeaseNameRecord
from tms_core.ids import LeaseId


class NameTable:
    def __init__(self, records: Iterable[LeaseNameRecord] = ()) -> None:
        self._records: dict[str, LeaseNameRecord] = {}
        self._of: dict[LeaseId, set[str]] = {}
        self._waiting: dict[LeaseId, set[str]] = {}
        # What each name is indexed under: records are changed in place before `put`.
        self._indexed: dict[str, tuple[LeaseId | None, LeaseId | None]] = {}
        for record in records:
            self.put(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LeaseNameRecord]:
        return iter(self._records.values())

    def get(self, name: str) -> LeaseNameRecord | None:
        return self._records.get(name)

    def records(self) -> dict[str, LeaseNameRecord]:
        """The records by name (the table's own: read, never change)."""
        return self._records

    def names_of(self, lease_id: str) -> list[str]:
        """Names that point at the lease, or will once it is READY."""
        return sorted(self._of.get(LeaseId(lease_id), ()))

    def waiting_for(self, lease_id: LeaseId) -> list[LeaseNameRecord]:
        return [self._records[name] for name in self._waiting.get(lease_id, ())]

    def put(self, record: LeaseNameRecord) -> None:
        """Adds or re-indexes `record` after its lease ids changed."""
        self._unindex(record.name)
        self._records[record.name] = record
        for lease_id in (record.lease_id, record.next_lease_id):
            if lease_id:
                self._of.setdefault(lease_id, set()).add(record.name)
        if record.next_lease_id:
            self._waiting.setdefault(record.next_lease_id, set()).add(record.name)
        self._indexed[record.name] = (record.lease_id, record.next_lease_id)

    def delete(self, name: str) -> LeaseNameRecord | None:
        self._unindex(name)
        return self._records.pop(name, None)

    def _unindex(self, name: str) -> None:
        indexed = self._indexed.pop(name, None)
        if indexed is None:
            return
        current, upcoming = indexed
        for index, lease_id in (
            (self._of, current),
            (self._of, upcoming),
            (self._waiting, upcoming),
        ):
            names = index.get(lease_id) if lease_id else None
            if names is not None:
                names.discard(name)
                if not names:
                    del index[lease_id]  # type: ignore[arg-type]
