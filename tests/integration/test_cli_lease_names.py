"""`tms lease status|renew|release NAME`: a lease name addresses its lease on the command
line as its id does, against a real daemon and real Triton."""

from __future__ import annotations

import pytest

from tests.conftest import Daemon
from tests.integration.test_cli_tmsctl import ADD_SUB, ok, one_line_error, rows
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton


def named_lease(daemon: Daemon, name: str) -> str:
    return ok(daemon.cli("lease", "create", "-m", ADD_SUB, "--name", name, "-z")).strip()


def test_lease_status_by_name(daemon: Daemon) -> None:
    lease_id = named_lease(daemon, "adder")
    status = ok(daemon.cli("lease", "status", "adder"))
    assert f"lease {lease_id}" in status and "READY" in status
    [row] = rows(ok(daemon.cli("lease", "status", "adder", "-z")))
    assert row[:3] == [lease_id, "adder", "READY"]
    # A name given later (`name create`) addresses the lease too, and may name it by a name.
    assert ok(daemon.cli("lease", "name", "create", "summer", "adder", "-z")) == "summer\n"
    assert rows(ok(daemon.cli("lease", "status", "summer", "-z")))[0][0] == lease_id
    line = one_line_error(daemon.cli("lease", "status", "nobody"))
    assert "no lease with id or name 'nobody'" in line
    line = one_line_error(daemon.cli("lease", "name", "create", "l-0123456789ab", lease_id))
    assert "shape of a lease id" in line


def test_lease_renew_by_name(daemon: Daemon) -> None:
    lease_id = named_lease(daemon, "adder")
    before = daemon.client.status(lease_id).expires_at
    [row] = rows(ok(daemon.cli("lease", "renew", "adder", "--duration", "2h", "-z")))
    assert row[:3] == [lease_id, "adder", "READY"]
    assert daemon.client.status(lease_id).expires_at > before


def test_lease_release_by_name(daemon: Daemon) -> None:
    lease_id = named_lease(daemon, "adder")
    [row] = rows(ok(daemon.cli("lease", "release", "adder", "-z")))
    assert row[:3] == [lease_id, "adder", "RELEASED"]
    assert daemon.client.status(lease_id).state == pb.LEASE_RELEASED
