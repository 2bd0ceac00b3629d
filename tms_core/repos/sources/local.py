"""`file://` URIs and plain absolute paths: a model directory, archive or file on this
machine (or on a volume mounted into the sidecar's pod)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tms_core.repos.archive import extract, is_archive
from tms_core.repos.plain import SettingsFields
from tms_core.repos.policy import RepositoryError, Resolved
from tms_core.repos.transfer import ObjectInfo, Transfer


def path_of(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme == "" and uri.startswith("/"):
        return Path(uri)
    if parts.netloc not in ("", "localhost"):
        raise RepositoryError(f"file URI {uri!r} names host {parts.netloc!r}; only local paths")
    return Path(unquote(parts.path))


class LocalSource:
    def stat(self, uri: str) -> ObjectInfo:
        path = path_of(uri)
        if path.is_dir():
            digest = hashlib.sha256()
            size = 0
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    st = file.stat()
                    size += st.st_size
                    digest.update(
                        f"{file.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
                    )
            return ObjectInfo(size, digest.hexdigest(), "directory")
        if path.is_file():
            st = path.stat()
            kind = "archive" if is_archive(path.name) else "file"
            return ObjectInfo(st.st_size, f"{st.st_size}-{st.st_mtime_ns}", kind)
        raise RepositoryError(f"{path} does not exist")

    def download(self, uri: str, info: ObjectInfo, dest: Path, transfer: Transfer) -> None:
        path = path_of(uri)
        transfer.check_size(info.size)
        transfer.total = info.size
        if info.kind == "directory":
            if transfer.sha256:
                raise RepositoryError(
                    "sha256= applies to an archive or a single file, not a directory"
                )

            def copy(src: str, dst: str) -> None:
                shutil.copy2(src, dst)
                transfer.add(Path(dst).stat().st_size)

            shutil.copytree(path, dest, symlinks=False, copy_function=copy, dirs_exist_ok=True)
            return
        with open(path, "rb") as source:
            if info.kind == "archive":
                archive = dest.with_name(dest.name + ".archive")
                try:
                    transfer.verify(transfer.stream_to(source, archive))
                    extract(archive, dest, max_bytes=transfer.max_bytes)
                finally:
                    archive.unlink(missing_ok=True)
            else:
                (dest / "1").mkdir(parents=True, exist_ok=True)
                transfer.verify(transfer.stream_to(source, dest / "1" / path.name))


def make(resolved: Resolved, settings: SettingsFields) -> LocalSource:
    return LocalSource()
