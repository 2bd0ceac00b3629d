"""What a user sees while a model downloads and once it is cached, with real Triton: the
progress of a slow HTTP download in the lease's updates and in `Watch`, and the node cache
in `tms cluster` / `tms models`."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, Daemon
from tests.repos.servers import HttpRepo, Served
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions, ModelRequest

pytestmark = pytest.mark.triton


def padded_add_sub(padding: int) -> bytes:
    """add_sub as a .tar.gz with `padding` random (incompressible) bytes beside its code."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file in sorted((EXAMPLES / "add_sub").rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                tar.add(file, file.relative_to(EXAMPLES / "add_sub").as_posix())
        info = tarfile.TarInfo("1/padding.bin")
        info.size = padding
        tar.addfile(info, io.BytesIO(os.urandom(padding)))
    return buffer.getvalue()


def test_progress_of_a_slow_download_and_the_cache_are_visible(
    make_daemon: Callable[..., Daemon], tmp_path: Path, http_repo: HttpRepo
) -> None:
    body = padded_add_sub(3 * 2**20)
    # About 2.5 s of download: several progress reports (every 0.25 s) at the least.
    http_repo.files["/models/add_sub.tar.gz"] = Served(body, etag='"v1"', rate=len(body) // 2)
    uri = http_repo.url("/models/add_sub.tar.gz")
    config = tmp_path / "tms.yaml"
    config.write_text(yaml.safe_dump({"repositories": {"cache_size": "1GiB"}}))
    daemon = make_daemon("--idle-grace=60s", f"--config={config}")

    updates = list(
        daemon.client.acquire([ModelRequest("add_sub", uri)], LeaseOptions(duration_s=600))
    )
    assert updates[-1].state == pb.LEASE_READY, updates[-1].reason
    lease_id = updates[-1].id

    # The lease's own updates carried the download as it went.
    seen = [
        (m.bytes_done, m.bytes_total)
        for update in updates
        for m in update.models
        if m.state == pb.MODEL_FETCHING and m.bytes_done
    ]
    assert len(seen) >= 3, seen
    assert all(total == len(body) for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] < done[-1] <= len(body)

    # So did Watch: FETCHING events with growing bytes, of the archive's size.
    fetching = [
        e
        for e in daemon.client.watch(follow=False)
        if e.kind == "model" and e.state == "FETCHING" and e.lease_id == lease_id and e.bytes_done
    ]
    assert len(fetching) >= 3, fetching
    assert {e.bytes_total for e in fetching} == {len(body)}
    assert [e.bytes_done for e in fetching] == sorted(e.bytes_done for e in fetching)
    assert fetching[-1].reason.endswith(" of 3.0 MiB")

    # The node's cache, as its sidecar reported it (read after the fetch, so with LOADING).
    (entry,) = [m for n in daemon.client.cluster().nodes for m in n.cache.models]
    assert (entry.name, entry.uri, entry.in_use) == ("add_sub", uri, True)
    assert entry.bytes >= 3 * 2**20
    (node,) = daemon.client.cluster().nodes
    assert node.cache.cap_bytes == 2**30 and node.cache.size_bytes == entry.bytes

    shown = json.loads(daemon.cli("cluster", "-o", "json").stdout)
    assert shown[0]["cache"]["models"][0]["uri"] == uri
    assert "model cache" in daemon.cli("cluster").stdout
    (model,) = [m for m in daemon.client.models().models if m.name == "add_sub"]
    assert list(model.cached_on) == [node.name]

    # A second lease on the model: from the cache, no download, and (stdout not a TTY) the
    # CLI prints the lease without any progress drawing.
    daemon.client.release(lease_id)
    again = daemon.cli("lease", "acquire", "-m", f"name=add_sub,uri={uri}", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "READY"
    assert "\r" not in again.stdout + again.stderr
    assert http_repo.gets("/models/add_sub.tar.gz") == 1
