"""The machine's model cache, shared by every server (sidecar) on it.

```
<cache>/entries/<key>/model/   a verified model directory (key: a digest of its URI)
<cache>/entries/<key>/meta.json   its URI (credentials stripped), version, size, last use
<cache>/locks/<key>            held shared by each sidecar whose server holds the model;
                               held exclusive while the model is fetched or evicted
<cache>/incoming/, trash/      staging and removal, so an entry appears and goes at once
```

A server gets its own copy of an entry's files (`materialise`), so a model (or Triton) that
writes into its files cannot change what the next server is given: a reflink where the file
system has them (XFS, btrfs: shared blocks, copied on write, as fast as a link); else a
plain copy of each file under COPY_BELOW; else, for the large files, a hard link. The
entry's files are read-only, and the entry records each file's size and mtime: an entry
whose file was written through a hard link is found changed at its next use and fetched
again rather than served (docs/repositories.md has the figures behind this choice). An entry
can be replaced or evicted without touching a loaded model; still, an entry some server
holds is never evicted. Locks are `flock`s, which die with their process and work across
the pods of a node sharing a hostPath.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tms_core.repos.policy import redact

log = logging.getLogger(__name__)

COPY_BELOW = 64 * 1024**2
"""Files smaller than this are copied when the file system cannot reflink: ~50 ms at most
each (copying runs at ~1.2 GiB/s on the measured ext4), against a load of seconds."""

# linux/fs.h: _IOW(0x94, 9, int): make the destination share the source's blocks.
_FICLONE = 0x40049409
# A write sets mtime to the kernel's coarse clock; pulling fresh mtimes back this far keeps
# a write just after the entry was made from landing on the very mtime recorded.
_MTIME_BACK_NS = 2_000_000_000


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


def unique(nbytes: int = 4) -> str:
    """A random suffix for a scratch name (hex, twice `nbytes` long). Not uuid4: the uuid
    module imports `platform`, ~3 ms of the sidecar's first fetch."""
    return os.urandom(nbytes).hex()


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
        path = self.root / "incoming" / f"{key}-{unique()}"
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
        changed = _changed(self.entry(key) / "model", meta.get("files"))
        if changed:
            # Written through a hard link by some server (or by hand): its bytes are no
            # longer what was fetched and checked, so it is fetched again, not served.
            log.warning(
                "cache entry of %s was modified (%s); fetching it again", meta.get("uri"), changed
            )
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
        meta: dict[str, object] = {
            "uri": redact(uri),
            "name": name,
            "version": version,
            "sha256": sha256,
            "size": tree_size(entry_dir / "model"),
            "last_used": time.time(),
            "files": _seal(entry_dir / "model"),
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
            tmp = self.entry(key) / f"meta.json.{unique(3)}"
            tmp.write_text(json.dumps(meta))
            tmp.rename(self.entry(key) / "meta.json")

    def _discard(self, path: Path) -> None:
        if path.exists():
            trash = self.root / "trash" / f"{path.name}-{unique()}"
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


def _seal(model: Path) -> dict[str, list[int]]:
    """Makes the entry's files read-only and returns each one's (size, mtime_ns)."""
    now = time.time_ns()
    record = {}
    for file in sorted(model.rglob("*")):
        if file.is_symlink() or not file.is_file():
            continue
        info = file.stat()
        if info.st_mtime_ns > now - _MTIME_BACK_NS:
            os.utime(file, ns=(info.st_atime_ns, now - _MTIME_BACK_NS))
        file.chmod(stat.S_IMODE(info.st_mode) & ~0o222)
        info = file.stat()
        record[file.relative_to(model).as_posix()] = [info.st_size, info.st_mtime_ns]
    return record


def _changed(model: Path, record: object) -> str:
    """What differs between the entry's files and what `_seal` recorded ("" if nothing). An
    entry with no record (made before the record was kept) counts as changed."""
    if not isinstance(record, dict):
        return "no record of its files"
    for relative, expected in record.items():
        try:
            info = (model / relative).stat()
        except OSError:
            return f"{relative} is missing"
        if [info.st_size, info.st_mtime_ns] != expected:
            return f"{relative} was written"
    return ""


def materialise(source: Path, dest: Path) -> None:
    """Makes `dest` a copy of the cache entry `source` that the server may write into without
    changing the entry: reflinks, else copies of files under COPY_BELOW, else hard links
    (guarded by the entry's read-only mode and its size/mtime record)."""
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
            if not src.is_symlink():
                _place_file(src, dest / relative / name)


def _place_file(src: Path, dst: Path) -> None:
    size = src.stat().st_size
    if _reflink(src, dst):
        return
    if size >= COPY_BELOW:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system: a copy
    shutil.copyfile(src, dst)
    # Writable: the server's own copy.
    dst.chmod(0o644)


def _reflink(src: Path, dst: Path) -> bool:
    """Whether `dst` was made as a reflink of `src` (False: the file system has none)."""
    with open(src, "rb") as inp, open(dst, "wb") as out:
        try:
            fcntl.ioctl(out.fileno(), _FICLONE, inp.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                raise
        else:
            os.fchmod(out.fileno(), 0o644)
            return True
    dst.unlink()
    return False
