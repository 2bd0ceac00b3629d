"""Model sources, one module per URI scheme behind one small interface (`Source`).

Adding a scheme is one module with a `make(resolved, settings) -> Source` function and a line
in `SCHEMES`. Modules are imported on first use, so a sidecar that only copies `file://`
models never loads boto3.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from tms_core.repos.plain import SettingsFields
from tms_core.repos.policy import Refused, Resolved
from tms_core.repos.transfer import ObjectInfo, Transfer

SCHEMES = {
    "file": "tms_core.repos.sources.local",
    "s3": "tms_core.repos.sources.s3",
    "http": "tms_core.repos.sources.http",
    "https": "tms_core.repos.sources.http",
}


class Source(Protocol):
    def stat(self, uri: str) -> ObjectInfo:
        """What is at `uri` (presence, size, version), read without downloading it. Raises
        RepositoryError saying what is wrong: not found, access denied, unreachable."""
        ...

    def download(self, uri: str, info: ObjectInfo, dest: Path, transfer: Transfer) -> None:
        """Fills the empty directory `dest` with the model directory at `uri` (an archive
        unpacked, a single file as `1/<file>`), within `transfer`'s limits, checking its
        `sha256`. A failure may leave files in `dest`; the caller removes it."""
        ...


class _Factory(Protocol):
    def __call__(self, resolved: Resolved, settings: SettingsFields) -> Source: ...


def source_for(scheme: str, resolved: Resolved, settings: SettingsFields) -> Source:
    module = SCHEMES.get(scheme)
    if module is None:
        supported = ", ".join(sorted(f"{s}://" for s in SCHEMES))
        raise Refused(
            f"scheme {scheme or '(none)'!r} is not supported; expected one of {supported}"
        )
    make: _Factory = importlib.import_module(module).make
    return make(resolved, settings)
