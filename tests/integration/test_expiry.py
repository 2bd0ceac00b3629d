"""Leases that are not renewed expire on time and lose their models; renewed ones stay."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import example, index
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def test_unrenewed_lease_expires_and_renewed_lease_stays(daemon: Daemon) -> None:
    renewed = list(daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=3)))[-1]
    expiring = list(
        daemon.client.acquire([example("blob_classifier")], LeaseOptions(duration_s=3))
    )[-1]
    assert renewed.state == expiring.state == pb.LEASE_READY
    assert renewed.expires_at <= expiring.expires_at
    http = expiring.endpoints.servers[0].http

    after_renew = daemon.client.renew(renewed.id, duration_s=60)
    assert after_renew.expires_at >= renewed.expires_at + 50

    # Follow the unrenewed lease until it ends; no fixed sleeps.
    history = list(daemon.client.follow(expiring.id))
    ended = history[-1]
    assert ended.state == pb.LEASE_EXPIRED
    assert ended.reason
    seen_at = time.time()
    # Expired within 1 s of its expiry time, as the daemon recorded it.
    assert 0 <= ended.updated_at - expiring.expires_at < 1.0
    assert seen_at - expiring.expires_at < 2.0

    # Its model is unloaded promptly: not READY any more, then gone from the index.
    wait_for(
        lambda: index(http).get("blob_classifier") != "READY",
        timeout=1.5,
        what="the expired lease's model to start unloading",
    )
    wait_for(
        lambda: "blob_classifier" not in index(http),
        timeout=10,
        what="the expired lease's model to leave the repository index",
    )

    # The renewed lease was due before the expired one, and is still serving.
    still = daemon.client.status(renewed.id)
    assert still.state == pb.LEASE_READY
    assert index(http)["add_sub"] == "READY"


def test_renewing_an_ended_lease_is_refused(daemon: Daemon) -> None:
    lease = list(daemon.client.acquire([example("add_sub")]))[-1]
    daemon.client.release(lease.id)
    result = daemon.cli("lease", "renew", lease.id)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "RELEASED" in result.stderr and "cannot be renewed" in result.stderr
