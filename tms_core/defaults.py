"""Defaults that clients need without loading the daemon's settings models (`config`, whose
pydantic import alone costs a short command most of its start)."""

from __future__ import annotations

DEFAULT_LISTEN = "127.0.0.1:30345"
