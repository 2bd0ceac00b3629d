"""Durable state: every change is committed to SQLite before the daemon acts on it."""

from tms_core.store.sqlite import Store, Transaction

__all__ = ["Store", "Transaction"]
