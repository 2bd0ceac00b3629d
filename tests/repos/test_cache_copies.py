"""A server's model directory is its own: a model (or Triton) writing into its files does
not change what the node cache gives the next server. Real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.repos.servers import HttpRepo, Served, tar_of_dir
from tms_core.repos import cache
from tms_core.repos.fetcher import Fetcher
from tms_core.repos.settings import RepositorySettings

ADD_SUB = tar_of_dir(EXAMPLES / "add_sub")
PRISTINE = (EXAMPLES / "add_sub" / "1" / "model.py").read_bytes()


def server(tmp_path: Path, name: str) -> Fetcher:
    models = tmp_path / name / "models"
    models.mkdir(parents=True)
    return Fetcher(RepositorySettings(stall_timeout=1.0, retries=0), models, tmp_path / "cache")


def scribble(path: Path) -> None:
    """What a model running as root (or one that chmods first) could do: overwrite its own
    file in place, same size, so only the write itself tells."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as file:
        file.write(b"#" * 16)


def cached_file(tmp_path: Path) -> Path:
    [entry] = (tmp_path / "cache" / "entries").iterdir()
    return entry / "model" / "1" / "model.py"


def test_a_write_into_a_served_model_does_not_reach_the_cache(
    tmp_path: Path, http_repo: HttpRepo
) -> None:
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB, etag='"v1"')
    uri = http_repo.url("/add_sub.tgz")
    first = server(tmp_path, "a")
    assert first.fetch("add_sub", uri)
    served = first.model_dir / "add_sub" / "1" / "model.py"
    # Small files are the server's own copy (a reflink where the file system has them).
    assert served.stat().st_ino != cached_file(tmp_path).stat().st_ino
    assert not cached_file(tmp_path).stat().st_mode & stat.S_IWUSR
    scribble(served)
    assert cached_file(tmp_path).read_bytes() == PRISTINE
    second = server(tmp_path, "b")
    assert not second.fetch("add_sub", uri)  # from the cache, still whole
    assert (second.model_dir / "add_sub" / "1" / "model.py").read_bytes() == PRISTINE
    assert http_repo.gets("/add_sub.tgz") == 1


def test_a_write_through_a_hard_link_is_found_and_the_model_fetched_again(
    tmp_path: Path, http_repo: HttpRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large files on a file system without reflinks: hard links (every file counts as
    # large here).
    monkeypatch.setattr(cache, "COPY_BELOW", 0)
    monkeypatch.setattr(cache, "_reflink", lambda src, dst: False)
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB, etag='"v1"')
    uri = http_repo.url("/add_sub.tgz")
    first = server(tmp_path, "a")
    assert first.fetch("add_sub", uri)
    served = first.model_dir / "add_sub" / "1" / "model.py"
    assert served.stat().st_ino == cached_file(tmp_path).stat().st_ino
    # Read-only: a server not running as root cannot write into it.
    assert not served.stat().st_mode & stat.S_IWUSR
    scribble(served)
    assert cached_file(tmp_path).read_bytes() != PRISTINE  # the link reached the cache
    # The next lease on the model finds the entry changed and downloads it again.
    second = server(tmp_path, "b")
    assert second.fetch("add_sub", uri)
    assert http_repo.gets("/add_sub.tgz") == 2
    assert (second.model_dir / "add_sub" / "1" / "model.py").read_bytes() == PRISTINE
    assert cached_file(tmp_path).read_bytes() == PRISTINE
    # And the fresh entry is served from the cache again.
    assert not server(tmp_path, "c").fetch("add_sub", uri)
