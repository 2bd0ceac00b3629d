"""Reading other processes through /proc: which process a recorded pid now is."""

from __future__ import annotations

from pathlib import Path


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces; "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
