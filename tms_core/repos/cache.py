"""The machine's model cache, shared by every server (sidecar) on it.

```
<cache>/entries/<key>/model/   a verified model directory (key: a digest of its URI)
<cache>/entries/<key>/meta.json   its URI (credentials stripped), version, size, last use
<cache>/locks/<key>            held shared by each sidecar whose server holds the model;
                               held exclusive while the model is fetched or evicted
<cache>/incoming/, trash/      staging and removal, so an entry appears and goes at once
```

Servers get hard links to an entry's files (a copy across file systems), so an entry can be
replaced or evicted without touching a loaded model; still, an entry some server holds is
never evicted. Locks are `flock`s, which die with their process and work across the pods of
a node sharing a hostPath.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tms_core.repos.policy import redact


@dataclass(frozen=True)
class CacheEntry:
    key: str
    uri: str
    version: str
    size: int
    last_used: float
    in_use: bool
    name: str = ""
    """The model name it was first fetched as."""


def cache_key(uri: str) -> str:
    return hashlib.sha256(uri.split("#", 1)[0].encode()).hexdigest()[:32]


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class ModelCache:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for part in ("entries", "locks", "incoming", "trash"):
            (root / part).mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> Path:
        return self.root / "entries" / key

    def staging(self, key: str) -> Path:
        path = self.root / "incoming" / f"{key}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def _lock_path(self, key: str) -> Path:
        return self.root / "locks" / key

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Held while `key` is fetched: a second sidecar waits, then finds it cached. (Not
        the lock of its users: a server holding the old version does not hold this up.)"""
        fd = os.open(self.root / "locks" / f"{key}.fetch", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def hold(self, key: str) -> int:
        """A shared lock on `key` for as long as a server holds the model (close to let go)."""
        fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def lookup(self, key: str, version: str, sha256: str = "") -> Path | None:
        """The cached model directory if it is of `version` (and, when the spec names one,
        was downloaded with that `sha256`), marking it used."""
        meta = self._meta(key)
        if meta is None or not version or meta.get("version") != version:
            return None
        if sha256 and meta.get("sha256") != sha256:
            # Fetched again, so the checksum is checked on what the store serves now.
            return None
        self._touch(key)
        return self.entry(key) / "model"

    def put(
        self, key: str, uri: str, version: str, staged: Path, *, name: str = "", sha256: str = ""
    ) -> Path:
        """Moves the verified model directory `staged` into the cache (replacing an older
        version) with one rename; returns where it now is."""
        entry_dir = staged.parent / f"{staged.name}.entry"
        entry_dir.mkdir()
        staged.rename(entry_dir / "model")
        meta = {
            "uri": redact(uri),
            "name": name,
            "version": version,
            "sha256": sha256,
            "size": tree_size(entry_dir / "model"),
            "last_used": time.time(),
        }
        (entry_dir / "meta.json").write_text(json.dumps(meta))
        target = self.entry(key)
        self._discard(target)
        entry_dir.rename(target)
        return target / "model"

    def _meta(self, key: str) -> dict[str, object] | None:
        try:
            loaded = json.loads((self.entry(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def _touch(self, key: str) -> None:
        meta = self._meta(key)
        if meta is not None:
            meta["last_used"] = time.time()
            tmp = self.entry(key) / f"meta.json.{uuid.uuid4().hex[:6]}"
            tmp.write_text(json.dumps(meta))
            tmp.rename(self.entry(key) / "meta.json")

    def _discard(self, path: Path) -> None:
        if path.exists():
            trash = self.root / "trash" / f"{path.name}-{uuid.uuid4().hex[:8]}"
            path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _in_use(self, key: str) -> bool:
        fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def entries(self) -> list[CacheEntry]:
        found = []
        for path in sorted((self.root / "entries").iterdir()):
            meta = self._meta(path.name)
            if meta is None:
                continue
            found.append(
                CacheEntry(
                    key=path.name,
                    uri=str(meta.get("uri", "")),
                    version=str(meta.get("version", "")),
                    size=int(str(meta.get("size", 0))),
                    last_used=float(str(meta.get("last_used", 0.0))),
                    in_use=self._in_use(path.name),
                    name=str(meta.get("name", "")),
                )
            )
        return found

    def evict(self, *, keep: str = "") -> list[str]:
        """Removes least recently used entries no server holds until the cache is within
        its cap; returns the URIs evicted. An entry in use (and `keep`) is never removed,
        even when that leaves the cache over its cap."""
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        evicted = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.in_use or entry.key == keep:
                continue
            fd = os.open(self._lock_path(entry.key), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # taken into use since the listing
                self._discard(self.entry(entry.key))
            finally:
                os.close(fd)
            total -= entry.size
            evicted.append(entry.uri)
        return evicted


def link_tree(source: Path, dest: Path) -> None:
    """Makes `dest` a copy of `source` out of hard links (copies across file systems)."""
    for root, dirs, files in os.walk(source):
        relative = Path(root).relative_to(source)
        (dest / relative).mkdir(parents=True, exist_ok=True)
        for name in [*dirs, *files]:
            src = Path(root) / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dest / relative / name)
                if name in dirs:
                    dirs.remove(name)
        for name in files:
            src = Path(root) / name
            if src.is_symlink():
                continue
            try:
                os.link(src, dest / relative / name)
            except OSError:
                shutil.copy2(src, dest / relative / name)
