"""Durable state: every change is committed to SQLite before the daemon acts on it.

`Store` and `Transaction` (the SQLite store) are loaded on first use, so that importing
`tms_core.store.memory` or `tms_core.store.protocol` (the simulator's path) does not load
`aiosqlite`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tms_core.store.sqlite import Store, Transaction

__all__ = ["Store", "Transaction"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tms_core.store import sqlite

        return getattr(sqlite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
