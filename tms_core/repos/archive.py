"""Unpacking a downloaded archive into a model directory, safely: no member may land outside
it (`..`, absolute paths, links that lead out), no device, FIFO or other special file is
made, and what is unpacked counts against the model's size limit."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tms_core.repos.policy import RepositoryError
from tms_core.repos.transfer import CHUNK
from tms_core.units import format_size

if TYPE_CHECKING:
    import tarfile

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _member_path(dest: Path, name: str) -> Path:
    """Where member `name` goes under `dest`; refuses names that would leave it."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (pure.parts and ":" in pure.parts[0]):
        raise RepositoryError(f"archive member {name!r} has an absolute path; refused")
    if ".." in pure.parts:
        raise RepositoryError(f"archive member {name!r} leads outside the model directory; refused")
    parts = [p for p in pure.parts if p not in ("", ".")]
    return dest.joinpath(*parts) if parts else dest


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise RepositoryError(
                f"the unpacked archive exceeds the size limit of {format_size(self.limit)}"
                " (repositories.max_model_size)"
            )


def extract(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Unpacks `archive` (tar, gzip'd tar or zip, by its content) into the empty `dest`."""
    # Imported here: a sidecar's first fetch, often of a plain directory, waits for its imports.
    import tarfile
    import zipfile

    budget = _Budget(max_bytes)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, budget)
        return
    try:
        with tarfile.open(archive, "r:*") as tar:
            _extract_tar(tar, dest, budget)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise RepositoryError(f"the archive cannot be read ({exc})") from None


def _extract_tar(tar: tarfile.TarFile, dest: Path, budget: _Budget) -> None:
    for member in tar:
        target = _member_path(dest, member.name)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            budget.take(member.size)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise RepositoryError(f"archive member {member.name!r} cannot be read")
            with source, open(target, "xb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
            # Only the owner's execute bit is kept: no set-id or world-writable files.
            os.chmod(target, 0o755 if member.mode & stat.S_IXUSR else 0o644)
        elif member.issym() or member.islnk():
            _check_link(dest, target, member.name, member.linkname, hard=member.islnk())
            if member.issym():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
            else:
                linked = _member_path(dest, member.linkname)
                if not linked.is_file() or linked.is_symlink():
                    raise RepositoryError(
                        f"archive hard link {member.name!r} names no file before it"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(linked, target)
        else:
            raise RepositoryError(
                f"archive member {member.name!r} is a device, FIFO or other special file; refused"
            )


def _check_link(dest: Path, target: Path, name: str, linkname: str, *, hard: bool) -> None:
    if linkname.startswith("/") or PurePosixPath(linkname).is_absolute():
        raise RepositoryError(f"archive link {name!r} points to an absolute path; refused")
    base = dest if hard else target.parent
    resolved = os.path.normpath(os.path.join(base, linkname))
    if not (resolved == str(dest) or resolved.startswith(str(dest) + os.sep)):
        raise RepositoryError(f"archive link {name!r} leads outside the model directory; refused")
    # A link through an earlier link could still lead out: refuse links into links.
    probe = Path(resolved)
    while probe != dest and str(probe).startswith(str(dest)):
        if probe.is_symlink():
            raise RepositoryError(f"archive link {name!r} goes through another link; refused")
        probe = probe.parent


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                target = _member_path(dest, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise RepositoryError(f"archive member {info.filename!r} is a link; refused")
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise RepositoryError(
                        f"archive member {info.filename!r} is a special file; refused"
                    )
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(target, "xb") as out:
                    # The declared size may lie (a zip bomb): count what really comes out.
                    while chunk := source.read(CHUNK):
                        budget.take(len(chunk))
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise RepositoryError(f"the archive cannot be read ({exc})") from None
