"""Pulling a model from its repository URI into the server's model directory: `file://`,
`s3://` and `http(s)://` through the machine's cache, with the daemon's repository settings
(`tms_core.repos`, which the daemon's presence check shares)."""

from __future__ import annotations

import os
from pathlib import Path

from tms_core.repos.fetcher import Fetcher
from tms_core.repos.policy import RepositoryError
from tms_core.repos.settings import RepositorySettings

__all__ = ["Fetcher", "RepositoryError", "RepositorySettings", "read_settings"]


def read_settings(path: Path | None) -> RepositorySettings:
    """The settings the daemon gave its sidecars: the file `--repositories` names (local
    servers) or the `TMS_REPOSITORIES` variable (pods); the defaults without either."""
    if path is None:
        if text := os.environ.get("TMS_REPOSITORIES"):
            return RepositorySettings.model_validate_json(text)
        return RepositorySettings()
    return RepositorySettings.model_validate_json(path.read_text())
