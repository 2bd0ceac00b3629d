"""Fetching a model into a server's model directory: the policy first, then the presence
check, the node cache (a hit downloads nothing), a download into a staging place, checks,
and one rename into place.

Triton lists every directory of its model repository, and reading one that is half written
fails the whole index call, so nothing is ever written in place: a failure leaves nothing in
the cache nor in the model directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

from tms_core.repos.cache import ModelCache, cache_key, materialise, unique
from tms_core.repos.plain import SettingsFields
from tms_core.repos.policy import Policy, RepositoryError, redact
from tms_core.repos.sources import Source, source_for
from tms_core.repos.transfer import ObjectInfo, Progress, Transfer

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def split_spec(uri: str) -> tuple[str, str]:
    """(the URI to fetch, the sha256 it names) from `uri#sha256=<hex>`."""
    base, _, fragment = uri.partition("#")
    if not fragment:
        return base, ""
    key, _, value = fragment.partition("=")
    if key != "sha256" or not _SHA256.match(value.lower()):
        raise RepositoryError(f"{redact(base)}: the URI fragment must be sha256=<64 hex digits>")
    return base, value.lower()


class Repositories:
    """The policy and the sources, as the daemon (presence checks) and sidecars use them."""

    def __init__(self, settings: SettingsFields) -> None:
        self.settings = settings
        self.policy = Policy(settings)
        # One source per repository, kept: an S3 client takes ~0.1 s to make and keeps its
        # connections warm between fetches.
        self._sources: dict[tuple[str, str], Source] = {}
        self._lock = threading.Lock()

    def source(self, uri: str) -> Source:
        """The source for `uri` once the policy allows it."""
        self.policy.check_allowed(uri)
        scheme = urlsplit(uri).scheme or "file"
        resolved = self.policy.resolve(uri)
        key = (scheme, resolved.repository.prefix)
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                source = self._sources[key] = source_for(scheme, resolved, self.settings)
        return source

    def stat(self, uri: str) -> ObjectInfo:
        """Whether the model at `uri` exists and is readable, and its size: raises
        RepositoryError naming what is wrong."""
        base, _ = split_spec(uri)
        info = self.source(base).stat(base)
        if info.size > self.settings.max_model_size:
            Transfer(self.settings.max_model_size, 0, 0).check_size(info.size)
        return info


class Fetcher:
    """A sidecar's fetching: models into `model_dir`, through the cache when there is one."""

    def __init__(self, settings: SettingsFields, model_dir: Path, cache_dir: Path | None) -> None:
        self.repos = Repositories(settings)
        self.model_dir = model_dir
        self.cache = ModelCache(cache_dir, max_bytes=settings.cache_size) if cache_dir else None
        self._holds: dict[str, int] = {}

    def _scratch(self, kind: str, name: str) -> Path:
        scratch = self.model_dir.parent / kind
        scratch.mkdir(exist_ok=True)
        return scratch / f"{name}-{unique()}"

    def fetch(self, name: str, uri: str, progress: Progress | None = None) -> bool:
        """Places the model at `uri` as `model_dir/name`, replacing what was there; returns
        whether anything was downloaded (False: a cache hit)."""
        _check_name(name)
        base, sha256 = split_spec(uri)
        source = self.repos.source(base)
        info = source.stat(base)
        settings = self.repos.settings
        transfer = Transfer(
            settings.max_model_size, settings.stall_timeout, settings.retries, progress, sha256
        )
        local = urlsplit(base).scheme in ("", "file")
        if self.cache is None or local:
            staging = self._scratch("incoming", name)
            try:
                staging.mkdir()
                source.download(base, info, staging, transfer)
                self._place(name, staging)
            finally:
                _remove_all(staging)
            return True
        key = cache_key(uri)
        hold = self.cache.hold(key)
        try:
            downloaded = False
            cached = self.cache.lookup(key, info.version, sha256)
            if cached is None:
                with self.cache.exclusive(key):
                    cached = self.cache.lookup(key, info.version, sha256)
                    if cached is None:
                        staged = self.cache.staging(key)
                        try:
                            (staged / "model").mkdir()
                            source.download(base, info, staged / "model", transfer)
                            cached = self.cache.put(
                                key,
                                base,
                                info.version,
                                staged / "model",
                                name=name,
                                sha256=transfer.digest,
                            )
                            downloaded = True
                        finally:
                            _remove_all(staged)
            if progress is not None and not downloaded:
                progress(info.size, info.size)
            staging = self._scratch("incoming", name)
            try:
                materialise(cached, staging)
                self._place(name, staging)
            finally:
                _remove_all(staging)
            self._let_go(name)
            self._holds[name] = hold
            hold = -1
            evicted = self.cache.evict(keep=key)
            if evicted:
                log.info("cache over its cap: evicted %s", ", ".join(evicted))
            return downloaded
        finally:
            if hold >= 0:
                os.close(hold)

    def _place(self, name: str, staging: Path) -> None:
        target = self.model_dir / name
        self.remove(name)
        staging.rename(target)

    def _let_go(self, name: str) -> None:
        fd = self._holds.pop(name, -1)
        if fd >= 0:
            os.close(fd)

    def remove(self, name: str) -> None:
        """Takes `model_dir/name` out of the model repository at once, then deletes it, and
        lets go of its cache entry."""
        _check_name(name)
        path = self.model_dir / name
        self._let_go(name)
        if not path.exists() and not path.is_symlink():
            return
        trash = self._scratch("trash", name)
        path.rename(trash)
        _remove_all(trash)


def _check_name(name: str) -> None:
    # The daemon refuses such names at acquire; this keeps a sidecar from ever replacing or
    # deleting a directory outside the model directory, whoever asked.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RepositoryError(f"{name!r} is not a model directory name")


def _remove_all(path: Path) -> None:
    for leftover in (
        path,
        path.with_name(path.name + ".download"),
        path.with_name(path.name + ".archive"),
    ):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
