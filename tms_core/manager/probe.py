"""What the manager can tell an observer about its own speed (the simulator's benchmark)."""

from __future__ import annotations

from typing import Protocol


class Probe(Protocol):
    def decided(self, wall_s: float, cpu_s: float) -> None:
        """A placement decision took this long (bringing the fleet index up to date and
        placing)."""
        ...

    def consolidated(self, wall_s: float, locked_s: float) -> None:
        """A consolidation pass took `wall_s` from reading its inputs to starting its moves,
        of which it held the manager's lock for `locked_s` (planning runs without it)."""
        ...
