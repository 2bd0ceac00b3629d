"""Leases on models from real repositories, served by real Triton: moto's S3 API and an HTTP
server on 127.0.0.1, reached by the daemon (presence check) and the sidecar (download)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import EXAMPLES, Daemon
from tests.integration.helpers import add_sub_grpc, add_sub_http
from tests.repos.servers import HttpRepo, MotoS3, Served, tar_of_dir
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError
from tms_core.lease_request import LeaseOptions, ModelRequest

pytestmark = pytest.mark.triton

ADD_SUB = tar_of_dir(EXAMPLES / "add_sub")
A = np.array([1, 2, 3, 4], dtype=np.float32)
B = np.array([10, 20, 30, 40], dtype=np.float32)


def start(make_daemon: Callable[..., Daemon], tmp_path: Path, repositories: object) -> Daemon:
    config = tmp_path / "tms.yaml"
    config.write_text(yaml.safe_dump({"repositories": repositories}))
    return make_daemon("--idle-grace=1s", f"--config={config}")


def ready(daemon: Daemon, uri: str) -> pb.Lease:
    updates = list(
        daemon.client.acquire([ModelRequest("add_sub", uri)], LeaseOptions(duration_s=600))
    )
    assert updates[-1].state == pb.LEASE_READY, updates[-1].reason
    return updates[-1]


def answers(lease: pb.Lease) -> None:
    total, _ = add_sub_http(lease.endpoints.http, A, B)
    np.testing.assert_allclose(total, A + B)
    total, _ = add_sub_grpc(lease.endpoints.grpc, A, B)
    np.testing.assert_allclose(total, A + B)


def model_dirs_clean(daemon: Daemon) -> list[str]:
    """What fetching left outside finished models and cache entries."""
    left = []
    for scratch in ("incoming", "trash"):
        for where in daemon.state_dir.glob(f"servers/*/{scratch}"):
            left += [str(p) for p in where.iterdir()]
        cache = daemon.state_dir / "model-cache" / scratch
        if cache.exists():
            left += [str(p) for p in cache.iterdir()]
    return left


def test_s3_and_https_models_become_ready_and_answer(
    make_daemon: Callable[..., Daemon], tmp_path: Path, moto_s3: MotoS3, http_repo: HttpRepo
) -> None:
    http_repo.token = "registry-token"
    http_repo.files["/models/add_sub.tar.gz"] = Served(ADD_SUB, etag='"1"')
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        yaml.safe_dump(
            {
                "store": {
                    "access_key_id": moto_s3.access_key,
                    "secret_access_key": moto_s3.secret_key,
                },
                "registry": {"token": "registry-token"},
            }
        )
    )
    daemon = start(
        make_daemon,
        tmp_path,
        {
            "secrets_file": str(secrets),
            "repositories": [
                {
                    "prefix": "s3://models/",
                    "endpoint_url": moto_s3.endpoint,
                    "region": "us-east-1",
                    "addressing_style": "path",
                    "credentials": "store",
                },
                {"prefix": http_repo.url("/models/"), "credentials": "registry"},
            ],
        },
    )
    lease = ready(daemon, "s3://models/add_sub")
    answers(lease)
    daemon.client.release(lease.id)
    digest = hashlib.sha256(ADD_SUB).hexdigest()
    lease = ready(daemon, http_repo.url(f"/models/add_sub.tar.gz#sha256={digest}"))
    answers(lease)
    daemon.client.release(lease.id)
    # The same model again: the node cache has it, so nothing is downloaded.
    ready(daemon, http_repo.url("/models/add_sub.tar.gz"))
    assert http_repo.gets("/models/add_sub.tar.gz") == 1
    assert "registry-token" not in daemon.log() and moto_s3.secret_key not in daemon.log()
    assert model_dirs_clean(daemon) == []


def test_the_standard_aws_variables_alone_are_enough(
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    moto_s3: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    daemon = make_daemon("--idle-grace=1s")
    answers(ready(daemon, "s3://models/add_sub"))


def test_refusals_and_failures_are_clear_and_leave_nothing(
    make_daemon: Callable[..., Daemon], tmp_path: Path, moto_s3: MotoS3, http_repo: HttpRepo
) -> None:
    http_repo.files["/models/add_sub.tar.gz"] = Served(ADD_SUB)
    http_repo.files["/models/truncated.tar.gz"] = Served(ADD_SUB, truncate_to=100)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        yaml.safe_dump(
            {"store": {"access_key_id": moto_s3.access_key, "secret_access_key": "not-the-secret"}}
        )
    )
    daemon = start(
        make_daemon,
        tmp_path,
        {
            "secrets_file": str(secrets),
            "allowed_prefixes": [
                "s3://models/",
                http_repo.url("/models/"),
                "http://169.254.169.254/",
            ],
            "stall_timeout": "2s",
            "retries": 1,
            "repositories": [
                {
                    "prefix": "s3://models/",
                    "endpoint_url": moto_s3.endpoint,
                    "region": "us-east-1",
                    "credentials": "store",
                }
            ],
        },
    )
    refused = {
        "s3://models/add_sub": "access denied",
        http_repo.url("/models/missing.tar.gz"): "does not exist",
        http_repo.url("/elsewhere/add_sub.tar.gz"): "not under an allowed repository prefix",
        "http://169.254.169.254/latest/add_sub.tar.gz": "link-local or cloud metadata",
    }
    for uri, problem in refused.items():
        with pytest.raises(ClientError, match=f"models\\[0\\].uri: model 'add_sub': .*{problem}"):
            list(daemon.client.acquire([ModelRequest("add_sub", uri)]))
    assert "not-the-secret" not in daemon.log()
    # Failures that only the download finds fail the lease with the reason.
    for uri, problem in {
        http_repo.url("/models/add_sub.tar.gz#sha256=" + "0" * 64): "checksum mismatch",
        http_repo.url("/models/truncated.tar.gz"): "truncated|broke off",
    }.items():
        updates = list(daemon.client.acquire([ModelRequest("add_sub", uri)]))
        assert updates[-1].state == pb.LEASE_FAILED
        assert re.search(problem, updates[-1].reason), updates[-1].reason
    assert model_dirs_clean(daemon) == []
    entries = daemon.state_dir / "model-cache" / "entries"
    assert not entries.exists() or not any(entries.iterdir())
