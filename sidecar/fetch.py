"""Pulling a model directory from its repository URI into the server's model directory.

Triton lists every directory of its model repository, and reading one that is half copied or
half deleted fails the whole index call, so models are staged and trashed beside the
repository and moved in and out with atomic renames.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse


class FetchError(Exception):
    pass


def _scratch(model_dir: Path, kind: str, name: str) -> Path:
    scratch = model_dir.parent / kind
    scratch.mkdir(exist_ok=True)
    return scratch / f"{name}-{uuid.uuid4().hex[:8]}"


def fetch(uri: str, name: str, model_dir: Path) -> Path:
    """Copies the model at `uri` to `model_dir/name`, replacing what was there."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" or (parsed.scheme == "" and uri.startswith("/")):
        source = Path(unquote(parsed.path))
    else:
        raise FetchError(f"repository scheme {parsed.scheme!r} is not supported by this sidecar")
    if not source.is_dir():
        raise FetchError(f"model directory {source} does not exist")
    staging = _scratch(model_dir, "incoming", name)
    try:
        shutil.copytree(source, staging, symlinks=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    target = model_dir / name
    remove(target)
    staging.rename(target)
    return target


def remove(path: Path) -> None:
    """Takes `path` out of the model repository at once, then deletes it."""
    if not path.exists() and not path.is_symlink():
        return
    trash = _scratch(path.parent, "trash", path.name)
    path.rename(trash)
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
