"""`%tms` on a fresh IPython shell against a real daemon with real Triton."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import Daemon
from tests.integration.helpers import broken_model
from tests.jupyter.conftest import ADD_SUB, Shell
from tms_console.jupyter.lease import NotebookLease
from tms_console.jupyter.magics import SUBCOMMANDS
from tms_console.jupyter.views import ClusterView, InferView, LeaseList
from tms_console.testinfer import TestInferError
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton

ACQUIRE = f"%tms acquire -m name=add_sub,uri={ADD_SUB},memory=64MiB --duration 10m"


def test_acquire_infer_renew_release(shell: Shell, daemon: Daemon) -> None:
    result, out, _ = shell.run(f"lease = {ACQUIRE}")
    assert result.success
    lease = shell.ns["lease"]
    assert isinstance(lease, NotebookLease)
    assert lease.state == "READY" and lease.models == ["add_sub"]
    # Progress: the states it went through, on one line, ending READY.
    assert out.startswith(f"lease {lease.id}: ") and "READY (" in out
    assert lease.tied

    # A ready tritonclient client for the lease's own endpoint.
    client = lease.client("http")
    assert isinstance(client, httpclient.InferenceServerClient)
    assert client.is_model_ready("add_sub")
    client.close()
    assert lease.client("grpc").is_model_ready("add_sub")

    outputs = shell.ok("lease.infer('add_sub', INPUT0=[1, 2, 3, 4], INPUT1=[1.0] * 4)")
    np.testing.assert_allclose(outputs["OUTPUT0"], [2, 3, 4, 5])
    np.testing.assert_allclose(outputs["OUTPUT1"], [0, 1, 2, 3])
    grpc_out = lease.infer(INPUT0=np.zeros(4), INPUT1=np.full(4, 2.0), protocol="grpc")
    np.testing.assert_allclose(grpc_out["OUTPUT1"], [-2, -2, -2, -2])

    # %tms infer: typed values where given, random elsewhere, with the latency.
    view = shell.ok("%tms infer lease INPUT0=1,2,3,4 --protocol grpc")
    assert isinstance(view, InferView)
    sent = view.result.inputs
    np.testing.assert_allclose(view.outputs["OUTPUT0"], sent["INPUT0"] + sent["INPUT1"], rtol=1e-6)
    np.testing.assert_allclose(sent["INPUT0"], [1, 2, 3, 4])
    assert 0 < view.latency_s < 30 and "ms" in repr(view)

    listed = shell.ok("%tms leases")
    assert isinstance(listed, LeaseList) and [x.id for x in listed] == [lease.id]
    assert lease.id in listed._repr_html_() and "READY" in repr(listed)

    cluster = shell.ok("%tms cluster")
    assert isinstance(cluster, ClusterView)
    assert lease.id in repr(cluster) and "declared 64.0 MiB" in repr(cluster)

    before = daemon.client.status(lease.id).expires_at
    renewed = shell.ok(f"%tms renew {lease.id} --duration 2h")
    assert renewed.expires_at >= before + 3600
    assert daemon.client.status(lease.id).expires_at == renewed.expires_at

    status = shell.ok("%tms status lease")
    assert status.id == lease.id and status.state == "READY"

    released = shell.ok("%tms release lease")
    assert released.state == "RELEASED"
    assert daemon.client.status(lease.id).state == pb.LEASE_RELEASED
    assert not lease.tied  # nothing left for the kernel to release


def test_cell_magic_takes_a_yaml_spec_and_names_a_variable(shell: Shell, daemon: Daemon) -> None:
    cell = (
        "%%tms lease served --keep\n"
        "name: served\n"
        "models:\n"
        f"  - name: add_sub\n    uri: {ADD_SUB}\n    memory: 64MiB\n"
        "duration: 15m\n"
    )
    lease = shell.ok(cell)
    assert shell.ns["served"] is lease
    assert lease.name == "served" and lease.state == "READY" and not lease.tied
    left = lease.expires_at - time.time()
    assert 14 * 60 < left <= 15 * 60
    # A lease name works wherever a lease is expected.
    shell.ok("%tms release served")
    assert daemon.client.status(lease.id).state == pb.LEASE_RELEASED


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%tms acquir", "UsageError: %tms: unknown subcommand 'acquir'; did you mean 'acquire'?"),
        ("%tms acquire", "UsageError: no models to lease: give -m name=NAME,uri=URI"),
        ("%tms acquire -m name=add_sub", "UsageError: --model #1: 'name=add_sub': uri= is missing"),
        (
            f"%tms acquire -m name=add_sub,uri={ADD_SUB} --duration 2x",
            "UsageError: --duration: '2x' is not a duration",
        ),
        ("%tms acquire --gpus -1 -m x", "UsageError: %tms acquire: Invalid value for '--gpus'"),
        ("%tms acquire --colour red", "UsageError: %tms acquire: No such option '--colour'"),
        ("%tms status", "UsageError: %tms status: Missing argument 'LEASE'."),
        ("%tms status l-000000000000", "UsageError: no lease with id or name 'l-000000000000'"),
        ("%tms release nobody", "UsageError: no lease with id or name 'nobody'"),
        ("%tms renew l-000000000000 --duration soon", "UsageError: --duration: 'soon'"),
        ("%tms infer l-000000000000", "UsageError: no lease with id or name 'l-000000000000'"),
        (
            "%tms target use host:99999",
            "UsageError: 'host:99999': the port is not a number from 1 to 65535",
        ),
        ("%tms 'unclosed", "UsageError: %tms: No closing quotation"),
        ("%%tms leases\nmodels: []", "UsageError: %%tms: expected `%%tms lease"),
        ("%%tms lease\nmodels: [", "UsageError: %%tms lease: the cell is not valid YAML"),
        (
            "%%tms lease\nmodel: []",
            "UsageError: %%tms lease: unknown key 'model'; did you mean 'models'?",
        ),
        (
            "%%tms lease 2x\nmodels: []",
            "UsageError: %%tms lease: '2x' is not a Python variable name",
        ),
    ],
)
def test_bad_input_is_one_line_usage_error(shell: Shell, line: str, message: str) -> None:
    result, out, err = shell.run(line)
    assert not result.success
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err + out


def test_bad_inputs_to_infer_name_the_input(shell: Shell) -> None:
    shell.ok(f"lease = {ACQUIRE}")
    for line, message in [
        ("%tms infer lease INPUT0=1,2,3", r"INPUT0: expected shape INPUT0 FP32[4], got [3]"),
        ("%tms infer lease INPUT9=1", "unknown input 'INPUT9'; model add_sub takes INPUT0, INPUT1"),
        ("%tms infer lease INPUT0", "%tms infer: 'INPUT0': expected NAME=VALUE"),
        ("%tms infer lease -m resnet", "model 'resnet' is not in lease"),
        ("%tms infer lease --protocol udp", "%tms infer: Invalid value for '--protocol'"),
    ]:
        result, _, err = shell.run(line)
        assert not result.success and err.startswith(f"UsageError: {message}"), (line, err)
        assert err.count("\n") == 1
    # From Python it is an exception, with the same kind of message.
    result, _, _ = shell.run("lease.infer(INPUT0=[1, 2, 3, 4])")
    assert isinstance(result.error_in_exec, TestInferError)
    assert str(result.error_in_exec) == (
        "missing input INPUT1 for model add_sub (it takes INPUT0 FP32[4], INPUT1 FP32[4])"
    )


def test_settings_are_traitlets_set_with_config(
    shell: Shell, daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    assert shell.ok("%tms target") == daemon.target
    _, listed, _ = shell.run("%tms help")
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in listed
    shell.ok("%config TmsMagics.refresh_interval = 0.25")
    assert shell.magics.refresh_interval == 0.25
    # %config refuses a bad value with the trait's one-line message and keeps the old one.
    shell.run("%config TmsMagics.refresh_interval = 0")
    assert "refresh_interval: expected 0.05 to 3600 seconds, got 0.0" in caplog.text
    assert shell.magics.refresh_interval == 0.25
    shell.ok("%config TmsMagics.token = 'abc'")
    assert shell.magics.token == "abc"
    # A daemon that is not there: one line naming the address, at once.
    shell.ok("%config TmsMagics.target = '127.0.0.1:9'")
    result, _, err = shell.run("%tms leases")
    assert not result.success
    assert err.startswith("UsageError: daemon unreachable at 127.0.0.1:9") and err.count("\n") == 1


def test_leases_acquired_here_are_released_with_the_shell_unless_kept(
    shell: Shell, daemon: Daemon
) -> None:
    tied = shell.ok(ACQUIRE)
    kept = shell.ok(f"{ACQUIRE} --keep")
    assert tied.tied and not kept.tied
    assert shell.magics.kernel_leases.release_all() == []
    assert daemon.client.status(tied.id).state in (pb.LEASE_RELEASING, pb.LEASE_RELEASED)
    assert daemon.client.status(kept.id).state == pb.LEASE_READY
    daemon.client.release(kept.id)


def test_a_failed_load_is_one_line_with_the_reason(shell: Shell, tmp_path: Path) -> None:
    broken = broken_model(tmp_path)
    result, out, err = shell.run(f"%tms acquire -m name=broken,uri={broken.uri}")
    assert not result.success
    assert out.startswith("lease l-") and "FAILED" in out
    assert err.startswith("UsageError: lease l-") and "FAILED: " in err
    assert "weights are corrupt" in err and err.count("\n") == 1
    assert shell.magics.kernel_leases.held() == {}  # nothing left to release at exit


def test_json_and_porcelain_output_as_in_the_cli(shell: Shell) -> None:
    result, out, _ = shell.run(f"lease = {ACQUIRE} -o json")
    assert result.success
    document = json.loads(out)  # nothing else printed: no progress line
    lease = shell.ns["lease"]
    assert document == lease.to_dict() and document["state"] == "READY"
    result, out, _ = shell.run(f"other = {ACQUIRE} -z")
    assert result.success and out == f"{shell.ns['other'].id}\n"
