"""Pulling a model from its repository URI into the server's model directory: `file://`,
`s3://` and `http(s)://` through the machine's cache, with the daemon's repository settings
(`tms_core.repos`, which the daemon's presence check shares).

The settings are parsed without pydantic (`tms_core.repos.plain`), and the S3 and HTTP
sources are imported only for a URI of theirs: a sidecar's first `file://` fetch waits for
none of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tms_core.repos.fetcher import Fetcher
from tms_core.repos.plain import PlainSettings, SettingsError, parse_settings
from tms_core.repos.policy import RepositoryError

__all__ = ["Fetcher", "PlainSettings", "RepositoryError", "read_settings"]


def read_settings(path: Path | None) -> PlainSettings:
    """The settings the daemon gave its sidecars: the file `--repositories` names (local
    servers) or the `TMS_REPOSITORIES` variable (pods); the defaults without either. Raises
    SettingsError naming where they came from, the field and what was expected."""
    if path is None:
        text = os.environ.get("TMS_REPOSITORIES")
        if not text:
            return PlainSettings()
        where = "TMS_REPOSITORIES"
    else:
        text = path.read_text()
        where = str(path)
    try:
        return parse_settings(text)
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
