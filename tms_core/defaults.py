"""Defaults that clients need without loading the daemon's settings models (`config`, whose
pydantic import alone costs a short command most of its start)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:30345"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tms"
