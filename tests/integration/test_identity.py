"""Identity against a real daemon: the local admin token found by itself, tokens made and
used from the CLI, forged sidecar reports refused, and listening beyond loopback."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon
from tests.integration.helpers import broken_model, example
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.client import TmsClient
from tms_core.backends.local import free_ports
from tms_core.lease_request import LeaseOptions

pytestmark = pytest.mark.triton


def test_the_local_admin_token_is_private_and_found_by_clients(daemon: Daemon) -> None:
    token_file = daemon.state_dir / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    me = daemon.client.whoami()
    assert (me.name, me.role) == ("local-admin", "admin")
    # The CLI finds it too: nothing typed.
    result = daemon.cli("whoami")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("local-admin\tadmin")


def test_cli_tokens_roles_and_revocation(daemon: Daemon) -> None:
    made = daemon.cli("token", "create", "watcher", "--role", "viewer", "-z")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("tms_")
    listed = daemon.cli("token", "list", "-o", "json")
    assert secret not in listed.stdout

    viewer = daemon.cli("--token", secret, "lease", "list")
    assert viewer.returncode == 0, viewer.stderr
    refused = daemon.cli(
        "--token", secret, "lease", "acquire", "-m", "name=add_sub,uri=examples/models/add_sub"
    )
    assert refused.returncode == 1
    assert "LeaseService.Acquire needs the user role" in refused.stderr

    assert daemon.cli("token", "revoke", "watcher").returncode == 0
    after = daemon.cli("--token", secret, "lease", "list")
    assert after.returncode == 1
    assert "'watcher' was revoked" in after.stderr
    audit = daemon.cli("audit", "-o", "json")
    assert '"method": "IdentityService.RevokeToken"' in audit.stdout
    assert secret not in audit.stdout


def test_twenty_forged_reports_do_not_make_a_failing_lease_ready(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    sidecar_port = free_ports(1)[0]
    daemon = make_daemon(f"--sidecar-listen=127.0.0.1:{sidecar_port}")
    model = broken_model(tmp_path)
    lease = next(iter(daemon.client.acquire([model], LeaseOptions(duration_s=120))))
    forged = pb.SidecarReport(
        server_id=lease.server_id,
        triton_ready=True,
        models=[pb.ModelReport(name=model.name, uri=model.uri, state=pb.MODEL_READY)],
    )
    admin_token = (daemon.state_dir / "admin.token").read_text().strip()
    with grpc.insecure_channel(f"127.0.0.1:{sidecar_port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        for i in range(20):
            # No credential, or the admin's lease-API token: both refused.
            metadata = (("authorization", f"Bearer {admin_token}"),) if i % 2 else ()
            with pytest.raises(grpc.RpcError) as caught:
                stub.Report(forged, timeout=5, metadata=metadata)
            assert caught.value.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            )
    final = daemon.client.wait_until_ready(lease.id)
    assert final.state == pb.LEASE_FAILED
    assert "weights are corrupt" in final.reason


def test_the_sidecar_service_has_a_listener_of_its_own(
    make_daemon: Callable[..., Daemon],
) -> None:
    sidecar_port = free_ports(1)[0]
    daemon = make_daemon(f"--sidecar-listen=127.0.0.1:{sidecar_port}")
    admin = (("authorization", f"Bearer {(daemon.state_dir / 'admin.token').read_text().strip()}"),)
    report = pb.SidecarReport(server_id="s-00000001", triton_ready=True)
    # The public API's port does not offer the sidecars' service, even to an admin...
    with grpc.insecure_channel(daemon.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.SidecarServiceStub(channel).Report(report, timeout=5, metadata=admin)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        hello = pb_grpc.SidecarServiceStub(channel).Connect(pb.SidecarHello(server_id="s-1"))
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(hello))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ...and the sidecars' port offers nothing else.
    with grpc.insecure_channel(f"127.0.0.1:{sidecar_port}") as channel:
        for call in (
            lambda: pb_grpc.LeaseServiceStub(channel).List(
                pb.ListRequest(), timeout=5, metadata=admin
            ),
            lambda: pb_grpc.IdentityServiceStub(channel).WhoAmI(
                pb.Empty(), timeout=5, metadata=admin
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The real sidecars use it: a lease still becomes READY.
    lease = next(iter(daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=60))))
    assert daemon.client.wait_until_ready(lease.id).state == pb.LEASE_READY


def test_listening_beyond_loopback_needs_the_insecure_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tms_core.cli.main",
            "daemon",
            "--listen=0.0.0.0:0",
            f"--state={tmp_path / 'state.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "daemon.listen 0.0.0.0:0 is plain text" in result.stderr
    assert "daemon.allow_insecure_listen" in result.stderr


def test_a_client_without_a_token_for_a_remote_looking_target_is_unauthenticated(
    daemon: Daemon, make_daemon: Callable[..., Daemon]
) -> None:
    # The daemon's own admin token is found only through its local pointer; a token-less
    # channel gets UNAUTHENTICATED with a message saying what to do.
    with grpc.insecure_channel(daemon.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.LeaseServiceStub(channel).List(pb.ListRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "no API token" in (caught.value.details() or "")
    with TmsClient(daemon.target, token="tms_wrong") as wrong:
        with pytest.raises(Exception, match="not one this daemon issued"):
            wrong.list_leases()
