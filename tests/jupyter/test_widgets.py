"""The dashboard and the inference form without a browser: widget state after updates and
events arrive, and after button clicks (against a real daemon with real Triton)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import example
from tests.jupyter.conftest import ADD_SUB, Shell
from tms_console.fleet import Update
from tms_console.jupyter.dashboard import Dashboard, SlotBars
from tms_console.jupyter.infer_widget import InferWidget
from tms_core.api import tms_pb2 as pb
from tms_core.backends.local import free_ports
from tms_core.lease_request import LeaseOptions

GiB = 1024**3


def _cluster() -> pb.ClusterStatus:
    return pb.ClusterStatus(
        nodes=[
            pb.NodeStatus(
                name="node-a",
                source="declared",
                cpu=pb.ResourceStatus(total_bytes=64 * GiB),
                gpus=[
                    pb.GpuStatus(
                        index=0, product="A100", memory=pb.ResourceStatus(total_bytes=16 * GiB)
                    ),
                    pb.GpuStatus(
                        index=1, product="A100", memory=pb.ResourceStatus(total_bytes=16 * GiB)
                    ),
                ],
            )
        ]
    )


def _lease(
    lease_id: str, gpu: int, declared: int, measured: int, state: int = pb.LEASE_READY
) -> pb.Lease:
    return pb.Lease(
        id=lease_id,
        name=f"name-{lease_id}",
        state=state,
        server_id=f"s-{gpu}",
        node="node-a",
        server_gpus=[gpu],
        models=[
            pb.ModelStatus(
                name="add_sub", uri="file:///m", memory_bytes=declared, measured_bytes=measured
            )
        ],
        expires_at=4_000_000_000.0,
    )


def _bars(dashboard: Dashboard) -> dict[str, tuple[float, float]]:
    rows = [r for r in dashboard.occupancy.children if isinstance(r, SlotBars)]
    return {r.slot_key: (r.declared.value, r.measured.value) for r in rows}


def test_dashboard_draws_occupancy_and_leases_and_follows_events() -> None:
    dashboard = Dashboard("127.0.0.1:1")  # not started: updates are applied by hand
    assert "no leases" in dashboard.table.value
    dashboard.apply(
        Update(
            cluster=_cluster(),
            leases=[_lease("l-aaa", 0, 8 * GiB, 4 * GiB), _lease("l-bbb", 1, 4 * GiB, 2 * GiB)],
            complete=True,
        )
    )
    assert _bars(dashboard) == {"node-a/gpu0": (0.5, 0.25), "node-a/gpu1": (0.25, 0.125)}
    first = dashboard.occupancy.children[0]
    assert "node-a GPU 0 · A100" in first.title.value
    assert "declared 8.0 GiB · measured 4.0 GiB of 16.0 GiB" in first.detail.value
    assert "servers: s-0 · leases: l-aaa" in first.detail.value
    assert "l-aaa" in dashboard.table.value and "l-bbb" in dashboard.table.value
    assert [v for _, v in dashboard.lease_picker.options] == ["l-aaa", "l-bbb"]
    assert "2 live leases" in dashboard.header.value

    # An event: l-aaa released. Its row, its bar and its picker entry go; the rest stay.
    dashboard.apply(
        Update(
            events=[pb.Event(seq=7, kind="lease", id="l-aaa", lease_id="l-aaa", state="RELEASED")]
        )
    )
    assert _bars(dashboard) == {"node-a/gpu0": (0.0, 0.0), "node-a/gpu1": (0.25, 0.125)}
    assert "l-aaa" not in dashboard.table.value and "l-bbb" in dashboard.table.value
    assert [v for _, v in dashboard.lease_picker.options] == ["l-bbb"]
    assert dashboard.lease_picker.value == "l-bbb"
    assert "1 live lease " in dashboard.header.value
    # A state change arrives as an event before the lease is fetched again.
    dashboard.apply(
        Update(
            events=[pb.Event(seq=8, kind="lease", id="l-bbb", lease_id="l-bbb", state="RELEASING")]
        )
    )
    assert "RELEASING" in dashboard.table.value
    dashboard.close()


def test_the_dashboard_shows_replicas_and_a_parked_lease() -> None:
    dashboard = Dashboard("127.0.0.1:1")
    scaled = _lease("l-sss", 0, 8 * GiB, 4 * GiB)
    scaled.autoscale.CopyFrom(pb.Autoscale(min_replicas=1, max_replicas=4))
    scaled.replicas_wanted = 2
    scaled.endpoints.servers.add(server_id="s-0")
    scaled.endpoints.servers.add(server_id="s-1")
    parked = _lease("l-ppp", 1, 4 * GiB, 0)
    parked.state = pb.LEASE_PARKED
    parked.autoscale.CopyFrom(pb.Autoscale(min_replicas=0, max_replicas=2))
    parked.replicas_wanted = 0
    dashboard.apply(Update(cluster=_cluster(), leases=[scaled, parked], complete=True))
    rows = re.findall(r"<tr>(.*?)</tr>", dashboard.table.value)
    cells = {row.split("</td>")[0].rsplit(">", 1)[-1]: row for row in rows[1:]}
    assert "<th" in rows[0] and "replicas</th>" in rows[0]
    assert "2/2 of 1:4" in cells["l-sss"]
    assert "PARKED" in cells["l-ppp"] and "0/0 of 0:2" in cells["l-ppp"]
    dashboard.close()


def test_form_errors_name_the_field_and_send_nothing() -> None:
    dashboard = Dashboard("127.0.0.1:1")
    dashboard.new_button.value = True
    assert dashboard.form.layout.display == "flex"
    dashboard.acquire_button.click()
    assert "model: give the model&#x27;s name" in dashboard.message.value
    dashboard.form_model.value = "add_sub"
    dashboard.acquire_button.click()
    assert "uri: give the model repository" in dashboard.message.value
    dashboard.form_uri.value = str(ADD_SUB)
    dashboard.form_memory.value = "lots"
    dashboard.acquire_button.click()
    assert "memory: " in dashboard.message.value
    dashboard.form_memory.value = ""
    dashboard.form_duration.value = "soon"
    dashboard.acquire_button.click()
    assert "duration: &#x27;soon&#x27; is not a duration" in dashboard.message.value
    assert not dashboard._workers  # nothing was sent
    dashboard.renew_button.click()
    assert "no lease selected" in dashboard.message.value
    dashboard.close()


def test_an_unreachable_daemon_is_shown_and_the_dashboard_still_stops() -> None:
    target = f"127.0.0.1:{free_ports(1)[0]}"
    dashboard = Dashboard(target, refresh_interval=0.1).start()
    try:
        wait_for(
            lambda: dashboard.connection == "unreachable", timeout=10, what="the feed to give up"
        )
        assert f"daemon unreachable at {target}" in dashboard.header.value
        assert dashboard.running  # it keeps trying, every refresh_interval
    finally:
        dashboard.close()
    assert not dashboard.running and "stopped" in dashboard.header.value


@pytest.mark.triton
def test_dashboard_buttons_and_live_updates_against_a_real_daemon(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon("--gpus=2x16GiB", "--idle-grace=1s")
    acquired: list[str] = []
    dashboard = Dashboard(
        daemon.target, refresh_interval=0.2, on_acquired=lambda lease: acquired.append(lease.id)
    ).start()
    try:
        wait_for(lambda: dashboard.connection == "live", timeout=10, what="the feed to go live")
        assert [key.rsplit("/", 1)[1] for key in _bars(dashboard)] == ["gpu0", "gpu1"]

        # Create from the form: the click returns at once, the lease arrives by events.
        dashboard.new_button.value = True
        dashboard.form_model.value = "add_sub"
        dashboard.form_uri.value = str(ADD_SUB)
        dashboard.form_memory.value = "4GiB"
        dashboard.form_duration.value = "10m"
        dashboard.form_name.value = "from-dashboard"
        dashboard.acquire_button.click()
        worker = dashboard._workers[-1]
        assert isinstance(worker, threading.Thread)
        worker.join(60)
        assert "READY at 127.0.0.1:" in dashboard.message.value, dashboard.message.value
        (lease_id,) = acquired
        wait_for(
            lambda: "READY" in dashboard.table.value and lease_id in dashboard.table.value,
            timeout=10,
            what="the new lease in the table",
        )
        wait_for(
            lambda: sorted(d for d, _ in _bars(dashboard).values()) == [0.0, 0.25],
            timeout=10,
            what="4 GiB of 16 GiB declared on one GPU",
        )
        assert "from-dashboard" in dashboard.table.value

        # Renew: the expiry moves, here and in the daemon.
        dashboard.lease_picker.value = lease_id
        dashboard.renew_for.value = "2h"
        dashboard.renew_button.click()
        assert re.search(rf"renewed {lease_id}: expires in (1h59m|2h00m)", dashboard.message.value)
        renewed = daemon.client.status(lease_id)
        assert renewed.expires_at > renewed.created_at + 3600

        # A lease made elsewhere (here: by the client, as the CLI would) shows up by itself.
        other = list(
            daemon.client.acquire([example("add_sub", GiB)], LeaseOptions(name="elsewhere"))
        )[-1]
        wait_for(
            lambda: "elsewhere" in dashboard.table.value,
            timeout=10,
            what="a lease acquired elsewhere to appear",
        )
        daemon.client.release(other.id, wait=False)

        # Release: the row leaves once the daemon says so.
        dashboard.release_button.click()
        assert f"releasing {lease_id}" in dashboard.message.value
        wait_for(lambda: lease_id not in dashboard.table.value, timeout=20, what="the row to go")
        assert daemon.client.status(lease_id).state in (pb.LEASE_RELEASING, pb.LEASE_RELEASED)
    finally:
        dashboard.close()
    assert not dashboard.running
    assert "stopped" in dashboard.header.value
    assert not any(t.name.startswith("tms-") for t in threading.enumerate())


@pytest.mark.triton
def test_infer_widget_builds_its_form_from_metadata_and_sends(shell: Shell) -> None:
    lease = shell.ok(f"%tms acquire -m name=add_sub,uri={ADD_SUB},memory=64MiB")
    widget = shell.ok(f"%tms infer-widget {lease.id}")
    assert isinstance(widget, InferWidget)
    assert widget.lease_picker.value == lease.id and widget.model_picker.value == "add_sub"
    boxes = list(widget.inputs.children)
    assert [b.description for b in boxes] == ["INPUT0", "INPUT1"]
    assert boxes[0].placeholder.startswith("INPUT0 FP32[4]: random if empty")

    boxes[0].value = "1, 2, 3"  # one short: refused before anything is sent
    widget.send_button.click()
    assert "INPUT0: expected shape INPUT0 FP32[4], got [3]" in widget.message.value
    assert widget.result is None

    boxes[0].value = "1, 2, 3, 4"
    boxes[1].value = "[10, 10, 10, 10]"
    widget.send_button.click()
    assert widget._worker is not None
    widget._worker.join(30)
    assert widget.result is not None, widget.message.value
    np.testing.assert_allclose(widget.result.outputs["OUTPUT0"], [11, 12, 13, 14])
    assert widget.latency.value.endswith(" ms</b>")
    assert "OUTPUT1" in widget.outputs.value and "-9" in widget.outputs.value

    widget.protocol.value = "grpc"  # the form is rebuilt from gRPC metadata; inputs random
    assert [b.value for b in widget.inputs.children] == ["", ""]
    widget.send_button.click()
    widget._worker.join(30)
    sent = widget.result.result.inputs
    np.testing.assert_allclose(
        widget.result.outputs["OUTPUT1"], sent["INPUT0"] - sent["INPUT1"], rtol=1e-6
    )
    assert widget.result.result.protocol == "grpc"


@pytest.mark.triton
def test_dashboard_magic_runs_in_the_background_and_stops_on_unload(
    shell: Shell, daemon: Daemon
) -> None:
    dashboard = shell.ok("%tms dashboard")
    assert isinstance(dashboard, Dashboard) and dashboard.running
    wait_for(lambda: dashboard.connection == "live", timeout=10, what="the feed to go live")
    # The kernel is free while the dashboard follows: a cell runs and a lease arrives.
    lease = shell.ok(f"%tms acquire -m name=add_sub,uri={ADD_SUB}")
    wait_for(lambda: lease.id in dashboard.table.value, timeout=10, what="the lease to show")
    assert shell.magics.widgets == [dashboard]
    shell.ok("%unload_ext tms_console")
    assert not dashboard.running and shell.magics.widgets == []
