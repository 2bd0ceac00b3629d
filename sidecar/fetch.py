"""Pulling a model directory from its repository URI into the server's model directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse


class FetchError(Exception):
    pass


def fetch(uri: str, name: str, model_dir: Path) -> Path:
    """Copies the model at `uri` to `model_dir/name`, replacing what was there, atomically."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" or (parsed.scheme == "" and uri.startswith("/")):
        source = Path(unquote(parsed.path))
    else:
        raise FetchError(f"repository scheme {parsed.scheme!r} is not supported by this sidecar")
    if not source.is_dir():
        raise FetchError(f"model directory {source} does not exist")
    target = model_dir / name
    staging = model_dir / f".{name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    # Triton must never see a half-copied model: copy aside, then swap in with a rename.
    shutil.copytree(source, staging, symlinks=False)
    remove(target)
    staging.rename(target)
    return target


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
