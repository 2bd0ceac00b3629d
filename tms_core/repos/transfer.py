"""What every source shares: the limits of one fetch, progress, streaming with a byte cap
and a digest, and retries of transient failures with backoff."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from tms_core.repos.policy import RepositoryError
from tms_core.units import format_size

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""Told (bytes done, bytes total; 0 when unknown) as a download goes."""

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    """What a presence check learns of a model: how big it is and which version (an ETag,
    an S3 version id, or a digest of a listing) — a changed version is fetched again."""

    size: int
    version: str
    kind: str
    """`archive` (tar or zip), `file` (one file, placed as version 1) or `directory`."""


@dataclass
class Transfer:
    """One model's fetch: its limits, and the bytes done so far (threads add to them)."""

    max_bytes: int
    stall_timeout: float
    retries: int
    progress: Progress | None = None
    sha256: str = ""
    """The digest the model spec expects of its archive or file (`#sha256=`); "": none."""
    total: int = 0
    digest: str = ""
    """The sha256 of the archive or file downloaded, once checked (the cache keeps it)."""
    _done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> int:
        return self._done

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            done = self._done
        if done > self.max_bytes:
            raise RepositoryError(
                f"download exceeds the size limit of {format_size(self.max_bytes)}"
                " (repositories.max_model_size)"
            )
        if self.progress is not None:
            self.progress(done, self.total)

    def restart(self) -> None:
        """A retry starts again from nothing."""
        with self._lock:
            self._done = 0
        if self.progress is not None:
            self.progress(0, self.total)

    def verify(self, digest: str) -> None:
        """Raises if the spec's `sha256=` differs from what was downloaded."""
        self.digest = digest
        if self.sha256 and digest != self.sha256:
            raise RepositoryError(
                f"checksum mismatch: the spec says sha256={self.sha256}, the download has {digest}"
            )

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise RepositoryError(
                f"the model is {format_size(size)}, over the size limit of "
                f"{format_size(self.max_bytes)} (repositories.max_model_size)"
            )

    def stream_to(self, source: BinaryIO, path: Path, *, expected: int = -1) -> str:
        """Copies `source` into `path` (created), counting every byte against the limit;
        returns the sha256 of what was written. A stall past the source's timeout raises
        from its read; fewer bytes than `expected` is a truncated (transient) failure."""
        digest = hashlib.sha256()
        written = 0
        # read1: what has arrived (up to CHUNK), so progress moves with a slow sender.
        read = getattr(source, "read1", source.read)
        with open(path, "wb") as out:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                self.add(len(chunk))
        if expected >= 0 and written != expected:
            raise RepositoryError(
                f"download truncated: {written} of {expected} bytes arrived", transient=True
            )
        return digest.hexdigest()


def with_retries(what: str, transfer: Transfer, attempt: Callable[[], T]) -> T:
    """Runs `attempt`, again after a transient failure (up to `transfer.retries` times, with
    jittered exponential backoff); the last failure is raised with how many tries it took."""
    delay = 0.2
    tries = transfer.retries + 1
    for number in range(1, tries + 1):
        try:
            return attempt()
        except RepositoryError as exc:
            if not exc.transient or number == tries:
                if exc.transient and tries > 1:
                    raise RepositoryError(f"{exc} (after {tries} tries)") from None
                raise
            log.info("%s: %s; retrying in %.1fs (try %d of %d)", what, exc, delay, number, tries)
        transfer.restart()
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")
