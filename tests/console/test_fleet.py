"""The console's fleet model: occupancy from a cluster snapshot and leases, kept current by
events, and the leases table's rows."""

from __future__ import annotations

import grpc
import pytest

from tests.console.conftest import render_text
from tms_console.console.render import fleet_view
from tms_console.fleet import LIST_THRESHOLD, Fleet, Followup, fetch, followup
from tms_console.jupyter.views import slot_members
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError

GiB = 1024**3
NOW = 1_700_000_000.0


def cluster(*, servers_on_gpu0: tuple[str, ...] = ()) -> pb.ClusterStatus:
    return pb.ClusterStatus(
        nodes=[
            pb.NodeStatus(
                name="node-a",
                source="declared",
                cpu=pb.ResourceStatus(total_bytes=64 * GiB),
                gpus=[
                    pb.GpuStatus(
                        index=0,
                        product="H100",
                        memory=pb.ResourceStatus(
                            total_bytes=80 * GiB, server_ids=list(servers_on_gpu0)
                        ),
                    ),
                    pb.GpuStatus(
                        index=1, product="H100", memory=pb.ResourceStatus(total_bytes=80 * GiB)
                    ),
                ],
            )
        ]
    )


def lease(
    lease_id: str,
    *,
    state: int = pb.LEASE_READY,
    server: str = "srv-1",
    gpus: tuple[int, ...] = (0,),
    models: tuple[tuple[str, int, int], ...] = (("add_sub", 2 * GiB, 1 * GiB),),
    expires_at: float = NOW + 600,
    **extra: object,
) -> pb.Lease:
    return pb.Lease(
        id=lease_id,
        state=state,  # type: ignore[arg-type]
        server_id=server,
        node="node-a",
        server_gpus=list(gpus),
        models=[
            pb.ModelStatus(
                name=name,
                uri=f"file:///models/{name}",
                memory_bytes=declared,
                measured_bytes=measured,
                state=pb.MODEL_READY,
            )
            for name, declared, measured in models
        ],
        expires_at=expires_at,
        **extra,  # type: ignore[arg-type]
    )


def event(seq: int, kind: str, subject: str, state: str, **extra: str) -> pb.Event:
    return pb.Event(seq=seq, at=NOW, kind=kind, id=subject, state=state, **extra)


class FakeClient:
    """Answers what Fleet asks of a TmsClient and counts the calls."""

    def __init__(self, status: pb.ClusterStatus, leases: list[pb.Lease]) -> None:
        self.status_ = status
        self.by_id = {lease.id: lease for lease in leases}
        self.calls: list[str] = []

    def cluster(self) -> pb.ClusterStatus:
        self.calls.append("cluster")
        return self.status_

    def list_leases(self) -> list[pb.Lease]:
        self.calls.append("list")
        return [
            lease
            for lease in self.by_id.values()
            if lease.state not in (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)
        ]

    def status(self, lease_id: str) -> pb.Lease:
        self.calls.append(f"status {lease_id}")
        if lease_id not in self.by_id:
            raise ClientError(f"no lease {lease_id}", grpc.StatusCode.NOT_FOUND)
        return self.by_id[lease_id]


def loaded(*leases: pb.Lease, status: pb.ClusterStatus | None = None) -> tuple[Fleet, FakeClient]:
    client = FakeClient(status or cluster(), list(leases))
    fleet = Fleet(clock=lambda: NOW)
    fleet.load(client)  # type: ignore[arg-type]
    return fleet, client


def slot(fleet: Fleet, key: str):  # type: ignore[no-untyped-def]
    return next(s for s in fleet.slots() if s.key == key)


def test_occupancy_counts_each_model_once_per_server_and_splits_over_its_gpus() -> None:
    fleet, _ = loaded(
        lease("l1"),
        # The same model on the same server counts once; a second model adds to it.
        lease("l2", models=(("add_sub", 2 * GiB, 1 * GiB), ("blob", 4 * GiB, 3 * GiB))),
        lease("l3", server="srv-2", gpus=(0, 1), models=(("big", 10 * GiB, 8 * GiB),)),
        lease("l4", server="srv-3", gpus=(), models=(("cpu", 1 * GiB, 0),)),
    )
    gpu0, gpu1, host = (
        slot(fleet, "node-a/gpu0"),
        slot(fleet, "node-a/gpu1"),
        slot(fleet, "node-a/host"),
    )
    assert (gpu0.declared_bytes, gpu0.measured_bytes) == (6 * GiB + 5 * GiB, 4 * GiB + 4 * GiB)
    assert (gpu1.declared_bytes, gpu1.measured_bytes) == (5 * GiB, 4 * GiB)
    assert gpu0.server_ids == ["srv-1", "srv-2"] and gpu1.server_ids == ["srv-2"]
    assert sorted(gpu0.lease_ids) == ["l1", "l2", "l3"]
    assert (host.declared_bytes, host.server_ids, host.lease_ids) == (GiB, ["srv-3"], ["l4"])
    assert gpu0.fraction(gpu0.declared_bytes) == pytest.approx(11 / 80)
    assert fleet.totals() == (160 * GiB, 16 * GiB, 12 * GiB)
    assert [s.label for s in fleet.nodes[0].slots] == ["GPU 0", "GPU 1", "host"]


def test_idle_servers_from_the_cluster_show_until_an_event_says_they_stopped() -> None:
    fleet, client = loaded(status=cluster(servers_on_gpu0=("srv-idle",)))
    assert slot(fleet, "node-a/gpu0").server_ids == ["srv-idle"]
    follow = fleet.apply_event(event(1, "server", "srv-idle", "STOPPED", server_id="srv-idle"))
    assert not follow and slot(fleet, "node-a/gpu0").server_ids == []
    # A new server is placed by the daemon: only the cluster call says on which GPU.
    follow = fleet.apply_event(event(2, "server", "srv-new", "STARTING", server_id="srv-new"))
    assert follow == Followup(cluster=True)
    client.status_ = cluster(servers_on_gpu0=("srv-new",))
    fleet.sync(client, follow)  # type: ignore[arg-type]
    assert slot(fleet, "node-a/gpu0").server_ids == ["srv-new"]


def test_lease_events_apply_at_once_and_name_the_lease_to_fetch() -> None:
    fleet, client = loaded(lease("l1", state=pb.LEASE_LOADING))
    before = fleet.version
    follow = fleet.apply_event(event(5, "lease", "l1", "READY", lease_id="l1"))
    assert fleet.leases["l1"].state == pb.LEASE_READY and fleet.version > before
    assert follow.lease_ids == {"l1"}

    follow = fleet.apply_event(event(6, "lease", "l1", "RELEASED", lease_id="l1"))
    assert "l1" not in fleet.leases and slot(fleet, "node-a/gpu0").declared_bytes == 0

    # A lease the fleet has not seen is fetched, and shows once fetched.
    client.by_id["l9"] = lease("l9", server="srv-9", gpus=(1,))
    follow = fleet.apply_event(event(7, "lease", "l9", "PENDING", lease_id="l9"))
    fleet.sync(client, follow)  # type: ignore[arg-type]
    assert "l9" in fleet.leases and slot(fleet, "node-a/gpu1").lease_ids == ["l9"]


def test_model_events_change_the_models_state_and_error() -> None:
    fleet, _ = loaded(lease("l1", state=pb.LEASE_LOADING))
    fleet.apply_event(event(1, "model", "add_sub", "FAILED", reason="bad config", lease_id="l1"))
    model = fleet.leases["l1"].models[0]
    assert (model.state, model.error) == (pb.MODEL_FAILED, "bad config")
    # OVER_DECLARED is news about memory, not a state: the lease is fetched again instead.
    follow = fleet.apply_event(event(2, "model", "add_sub", "OVER_DECLARED", lease_id="l1"))
    assert fleet.leases["l1"].models[0].state == pb.MODEL_FAILED and follow.lease_ids == {"l1"}


def test_events_replayed_after_a_reconnect_are_applied_once() -> None:
    fleet, _ = loaded(lease("l1"))
    fleet.apply_event(event(10, "lease", "l1", "READY", lease_id="l1"))
    replayed = event(10, "lease", "l1", "READY", lease_id="l1")
    assert not fleet.apply_event(replayed) and len(fleet.events) == 1
    # A restarted daemon counts from 1 again: its events are new, though their numbers are not.
    restarted = pb.Event(seq=3, at=NOW + 60, kind="lease", id="l1", state="EXPIRED", lease_id="l1")
    assert fleet.apply_event(restarted).lease_ids == {"l1"}
    assert "l1" not in fleet.leases and fleet.last_seq == 3 and len(fleet.events) == 2


def test_the_event_log_keeps_the_newest() -> None:
    fleet = Fleet(keep_events=3)
    for seq in range(1, 6):
        fleet.apply_event(event(seq, "pool", "p", "CREATED"))
    assert [e.seq for e in fleet.events] == [3, 4, 5]
    # An event that fell out of the log is new again if it ever came back.
    assert not fleet.apply_event(event(5, "pool", "p", "CREATED"))
    fleet.apply_event(event(1, "pool", "p", "CREATED"))
    assert [e.seq for e in fleet.events] == [4, 5, 1]


def test_a_batch_applies_its_events_then_what_was_fetched() -> None:
    fleet, client = loaded(lease("l1", state=pb.LEASE_LOADING), lease("l2"))
    batch = [
        event(1, "lease", "l1", "READY", lease_id="l1"),
        event(2, "lease", "l2", "RELEASING", lease_id="l2"),
        event(3, "server", "srv-2", "STARTING", server_id="srv-2"),
    ]
    follow = Followup()
    for e in batch:
        follow.merge(followup(e))
    assert follow == Followup(lease_ids={"l1", "l2"}, cluster=True)
    client.by_id["l1"] = lease("l1", state=pb.LEASE_READY, expires_at=NOW + 999)
    del client.by_id["l2"]
    update = fetch(client, follow)  # type: ignore[arg-type]
    update.events = batch
    fleet.apply_update(update)
    assert list(fleet.leases) == ["l1"] and fleet.leases["l1"].expires_at == NOW + 999
    assert client.calls[-3:] == ["cluster", "status l1", "status l2"]


def test_sync_drops_leases_the_daemon_no_longer_has_and_lists_when_many_changed() -> None:
    fleet, client = loaded(lease("l1"), lease("l2"))
    del client.by_id["l1"]
    fleet.sync(client, Followup(lease_ids={"l1", "l2"}))  # type: ignore[arg-type]
    assert list(fleet.leases) == ["l2"]

    client.calls.clear()
    many = {f"x{i}" for i in range(LIST_THRESHOLD + 1)}
    fleet.sync(client, Followup(lease_ids=many))  # type: ignore[arg-type]
    assert client.calls == ["list"]


def test_sync_lets_an_unreachable_daemon_through() -> None:
    fleet, client = loaded(lease("l1"))

    def down(lease_id: str) -> pb.Lease:
        raise ClientError("daemon unreachable", grpc.StatusCode.UNAVAILABLE)

    client.status = down  # type: ignore[method-assign]
    with pytest.raises(ClientError, match="unreachable"):
        fleet.sync(client, Followup(lease_ids={"l1"}))  # type: ignore[arg-type]
    assert "l1" in fleet.leases


def test_rows_sort_filter_and_format_expiry_and_activity() -> None:
    fleet, _ = loaded(
        lease("l1", name="chat", expires_at=NOW + 90, labels={"owner": "ana"}),
        lease(
            "l2",
            expires_at=NOW + 30,
            activity_window_s=300,
            last_activity_at=NOW - 12,
            models=(("blob", 0, 0),),
        ),
        lease("l3", state=pb.LEASE_PENDING, server="", expires_at=NOW - 1, activity_window_s=60),
    )
    rows = fleet.rows()
    assert [r.id for r in rows] == ["l3", "l2", "l1"]
    assert [r.expires_text(NOW) for r in rows] == ["expired", "30s", "1m30s"]
    assert [r.activity(NOW) for r in rows] == [
        "unused ↻1m00s",
        "12s ago ↻5m00s",
        "-",
    ]
    assert rows[2].owner == "ana" and rows[2].name == "chat"
    assert [r.id for r in fleet.rows(sort="name")] == ["l1", "l2", "l3"]
    assert [r.id for r in fleet.rows(sort="expires", reverse=True)] == ["l1", "l2", "l3"]
    assert [r.id for r in fleet.rows(filter_text="BLOB")] == ["l2"]
    assert [r.id for r in fleet.rows(filter_text="pending")] == ["l3"]
    assert [r.id for r in fleet.rows(filter_text="ana")] == ["l1"]
    with pytest.raises(ValueError, match="sort: 'size' is not a column"):
        fleet.rows(sort="size")


def test_lease_events_are_kept_for_the_detail_pane() -> None:
    fleet, _ = loaded(lease("l1"), lease("l2"))
    fleet.apply_event(event(1, "lease", "l1", "LOADING", lease_id="l1"))
    fleet.apply_event(event(2, "model", "add_sub", "READY", lease_id="l1"))
    fleet.apply_event(event(3, "lease", "l2", "READY", lease_id="l2"))
    fleet.apply_event(event(4, "server", "srv-1", "RUNNING", server_id="srv-1"))
    assert [e.seq for e in fleet.lease_events("l1")] == [1, 2]
    assert [lease.id for lease in fleet.ready_leases()] == ["l2"]  # l1 went back to LOADING


def test_a_download_in_progress_shows_in_the_table_the_detail_pane_and_the_notebook() -> None:
    from rich.console import Console

    from tms_console.console.render import lease_detail
    from tms_console.jupyter.dashboard import lease_table

    fleet, _ = loaded(lease("l1", state=pb.LEASE_LOADING))
    fleet.apply_event(
        event(1, "model", "add_sub", "FETCHING", reason="1.0 MiB of 4.0 MiB", lease_id="l1")
    )
    progress = pb.Event(
        seq=2,
        at=NOW,
        kind="model",
        id="add_sub",
        state="FETCHING",
        lease_id="l1",
        bytes_done=2**20,
        bytes_total=4 * 2**20,
    )
    fleet.apply_event(progress)
    (row,) = fleet.rows()
    assert row.models == "add_sub (1.0 MiB / 4.0 MiB (25%))"
    assert "1.0 MiB / 4.0 MiB (25%)" in lease_table(fleet.rows(), NOW)
    console = Console(width=120, record=True)
    console.print(lease_detail(fleet.leases["l1"], fleet.events, NOW))
    assert "FETCHING 1.0 MiB / 4.0 MiB (25%)" in console.export_text()
    # Once loading, the bytes are gone from the view.
    fleet.apply_event(event(3, "model", "add_sub", "LOADING", lease_id="l1"))
    assert fleet.rows()[0].models == "add_sub"


def test_standby_servers_are_marked_in_the_fleet_view_and_the_notebook() -> None:
    """An empty server kept for cold leases reads `(standby)`, another empty one `(idle)`."""
    status = pb.ClusterStatus(
        nodes=[
            pb.NodeStatus(
                name="node-a",
                source="declared",
                cpu=pb.ResourceStatus(
                    total_bytes=64 * 2**30,
                    server_ids=["s-kept", "s-empty"],
                    standby_server_ids=["s-kept"],
                ),
            )
        ]
    )
    fleet = Fleet()
    fleet.apply_cluster(status)
    text = render_text(fleet_view(fleet))
    assert "s-kept (standby)" in text and "s-empty (idle)" in text
    [slot] = [s for node in fleet.nodes for s in node.slots if s.server_ids]
    assert slot_members(slot).startswith("servers: s-empty, s-kept (standby) ·")
