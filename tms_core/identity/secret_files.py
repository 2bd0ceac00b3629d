"""Files that hold a secret: written whole, readable by their owner only (mode 0600)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_secret(path: Path) -> str | None:
    """The file's text, stripped; None when it is missing or unreadable."""
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
