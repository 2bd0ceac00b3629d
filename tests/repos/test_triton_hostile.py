"""Hostile and broken models through a real lease (daemon, sidecar, Triton), all against one
daemon: archives that try to write outside the model directory, a download over the size
limit, a truncated one, a stalled HTTP server and a stalled S3 transfer (moto behind a proxy
that goes silent), a wrong checksum, a host outside the allowlist and a metadata address.
Each fails the lease (or the acquire) with a clear reason, and nothing is left in the node
cache or in the server's model directory."""

from __future__ import annotations

import hashlib
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, Daemon
from tests.repos.servers import (
    HttpRepo,
    MotoS3,
    Served,
    StallingProxy,
    running,
    tar_gz,
    tar_of_dir,
)
from tests.repos.test_triton_progress import padded_add_sub
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError
from tms_core.lease_request import LeaseOptions, ModelRequest

pytestmark = pytest.mark.triton

ADD_SUB = tar_of_dir(EXAMPLES / "add_sub")
CONFIG = (EXAMPLES / "add_sub" / "config.pbtxt").read_bytes()
MODEL_PY = (EXAMPLES / "add_sub" / "1" / "model.py").read_bytes()
LIMIT = 2 * 2**20


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def add_sub_and(extra: tarfile.TarInfo, data: bytes | None = b"x") -> bytes:
    """add_sub's real files, plus one hostile member."""
    return tar_gz(
        [
            (member("config.pbtxt"), CONFIG),
            (member("1", tarfile.DIRTYPE), None),
            (member("1/model.py"), MODEL_PY),
            (extra, data),
        ]
    )


# path -> (what is served, what the lease's reason must say)
SERVED: dict[str, tuple[Served, str]] = {
    "/models/traversal.tar.gz": (
        Served(add_sub_and(member("../../escaped.txt"))),
        "leads outside",
    ),
    "/models/absolute.tar.gz": (
        Served(add_sub_and(member("/tmp/tms-hostile-absolute.txt"))),
        "absolute path",
    ),
    "/models/symlink.tar.gz": (
        Served(add_sub_and(member("1/passwd", tarfile.SYMTYPE, "/etc/passwd"), None)),
        "absolute path",
    ),
    "/models/symlink-up.tar.gz": (
        Served(add_sub_and(member("1/up", tarfile.SYMTYPE, "../../.."), None)),
        "leads outside",
    ),
    # HEAD does not tell the size, so only the download finds it too big.
    "/models/oversize.tar.gz": (
        Served(padded_add_sub(LIMIT + 2**20), head_length=False),
        "exceeds the size limit",
    ),
    # Small to download, too big unpacked.
    "/models/bomb.tar.gz": (
        Served(add_sub_and(member("1/zeros.bin"), bytes(LIMIT + 2**20))),
        "size limit",
    ),
    "/models/truncated.tar.gz": (Served(ADD_SUB, truncate_to=200), "truncated|broke off"),
    "/models/stalled.tar.gz": (Served(ADD_SUB, stall_after=200), "stalled"),
}


@pytest.fixture
def s3_stall(moto_s3: MotoS3) -> Iterator[StallingProxy]:
    """moto behind a proxy that goes silent in the middle of one object's download."""
    moto_s3.client().put_object(
        Bucket="models", Key="stall/add_sub.tar.gz", Body=padded_add_sub(256 * 1024)
    )
    yield from running(StallingProxy(moto_s3.port, b"/models/stall/add_sub.tar.gz"))


def leftovers(daemon: Daemon) -> list[str]:
    """Anything a failed fetch left: staging, trash, cache entries or the model itself."""
    state = daemon.state_dir
    left = [
        str(p)
        for pattern in (
            "servers/*/incoming/*",
            "servers/*/trash/*",
            "servers/*/*/add_sub",
            "model-cache/incoming/*",
            "model-cache/trash/*",
            "model-cache/entries/*",
        )
        for p in state.glob(pattern)
    ]
    return left + [str(p) for p in Path("/tmp").glob("tms-hostile-*")]


def test_hostile_and_broken_models_fail_the_lease_and_leave_nothing(
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    http_repo: HttpRepo,
    moto_s3: MotoS3,
    s3_stall: StallingProxy,
) -> None:
    for path, (served, _) in SERVED.items():
        http_repo.files[path] = served
    http_repo.files["/models/add_sub.tar.gz"] = Served(ADD_SUB)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        yaml.safe_dump(
            {
                "store": {
                    "access_key_id": moto_s3.access_key,
                    "secret_access_key": moto_s3.secret_key,
                }
            }
        )
    )
    config = tmp_path / "tms.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repositories": {
                    "secrets_file": str(secrets),
                    "allowed_prefixes": [
                        http_repo.url("/models/"),
                        "s3://models/",
                        "http://169.254.169.254/",
                    ],
                    "max_model_size": LIMIT,
                    # Short, so the stalls are found quickly; one retry, as a user would.
                    "stall_timeout": "1s",
                    "retries": 1,
                    "repositories": [
                        {
                            "prefix": "s3://models/",
                            "endpoint_url": s3_stall.endpoint,
                            "region": "us-east-1",
                            "addressing_style": "path",
                            "credentials": "store",
                        }
                    ],
                }
            }
        )
    )
    daemon = make_daemon("--idle-grace=60s", f"--config={config}")

    def fails(model: ModelRequest, problem: str) -> float:
        started = time.monotonic()
        updates = list(daemon.client.acquire([model], LeaseOptions(duration_s=600)))
        took = time.monotonic() - started
        last = updates[-1]
        assert last.state == pb.LEASE_FAILED, (model.uri, last.state)
        assert re.search(problem, last.reason), (model.uri, last.reason)
        assert last.reason.startswith("model 'add_sub': fetch failed: "), last.reason
        assert leftovers(daemon) == [], model.uri
        return took

    for path, (_, problem) in SERVED.items():
        fails(ModelRequest("add_sub", http_repo.url(path)), problem)
    # A wrong checksum named by the spec's sha256 key.
    fails(
        ModelRequest("add_sub", http_repo.url("/models/add_sub.tar.gz"), 0, "0" * 64),
        "checksum mismatch: the spec says sha256=0{64}",
    )
    # A stalled S3 transfer times out after stall_timeout on each of its two tries.
    took = fails(ModelRequest("add_sub", "s3://models/stall/add_sub.tar.gz"), "stalled")
    assert s3_stall.stalled == 2 and took < 20, (s3_stall.stalled, took)
    # Refused before anything is fetched: outside the allowlist, a metadata address.
    for uri, problem in {
        http_repo.url("/elsewhere/add_sub.tar.gz"): "not under an allowed repository prefix",
        "http://169.254.169.254/latest/add_sub.tar.gz": "link-local or cloud metadata",
    }.items():
        with pytest.raises(ClientError, match=f"models\\[0\\].uri: model 'add_sub': .*{problem}"):
            list(daemon.client.acquire([ModelRequest("add_sub", uri)]))
    assert leftovers(daemon) == []
    # The same server then serves the genuine model, checksum and all.
    digest = hashlib.sha256(ADD_SUB).hexdigest()
    updates = list(
        daemon.client.acquire(
            [ModelRequest("add_sub", http_repo.url("/models/add_sub.tar.gz"), 0, digest)]
        )
    )
    assert updates[-1].state == pb.LEASE_READY, updates[-1].reason
