"""FleetFeed: the snapshot, the Watch stream in batches with what they touched fetched once,
and reconnects by itself (against a scripted client; the app's tests use a real daemon)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator

import grpc

from tests.conftest import wait_for
from tms_console.feed import CONNECTING, LIVE, UNREACHABLE, FleetFeed
from tms_console.fleet import Fleet, Update
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError

DOWN = ClientError("daemon unreachable at test", grpc.StatusCode.UNAVAILABLE)


class ScriptedDaemon:
    """Hands out clients; `up` says whether calls succeed; events are pushed by the test."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.events: queue.Queue[pb.Event | None] = queue.Queue()
        self.leases = {"l1": pb.Lease(id="l1", state=pb.LEASE_LOADING)}
        self.calls: list[str] = []

    def client(self, target: str) -> ScriptedClient:
        return ScriptedClient(self)


class ScriptedClient:
    def __init__(self, daemon: ScriptedDaemon) -> None:
        self.daemon = daemon
        self.closed = threading.Event()

    def _check(self, call: str) -> None:
        self.daemon.calls.append(call)
        if not self.daemon.up.is_set():
            raise DOWN

    def cluster(self) -> pb.ClusterStatus:
        self._check("cluster")
        return pb.ClusterStatus(nodes=[pb.NodeStatus(name="n", cpu=pb.ResourceStatus())])

    def list_leases(self) -> list[pb.Lease]:
        self._check("list")
        return list(self.daemon.leases.values())

    def status(self, lease_id: str) -> pb.Lease:
        self._check(f"status {lease_id}")
        return self.daemon.leases[lease_id]

    def watch(self, **_: object) -> Generator[pb.Event, None, None]:
        self._check("watch")
        while not self.closed.is_set():
            try:
                event = self.daemon.events.get(timeout=0.02)
            except queue.Empty:
                continue
            if event is None:  # the daemon went away mid-stream
                raise DOWN
            yield event

    def close(self) -> None:
        self.closed.set()


def test_feed_batches_fetches_and_reconnects() -> None:
    daemon = ScriptedDaemon()
    updates: queue.Queue[Update] = queue.Queue()
    statuses: list[tuple[str, str]] = []
    feed = FleetFeed(
        "test",
        updates.put,
        lambda state, message: statuses.append((state, message)),
        retry_s=0.05,
        batch_s=0.2,
        client_factory=daemon.client,  # type: ignore[arg-type]
    ).start()
    fleet = Fleet()
    try:
        # Down from the start: said once per attempt, and tried again by itself.
        wait_for(lambda: statuses.count((UNREACHABLE, str(DOWN))) >= 2, timeout=5, what="retries")
        daemon.up.set()
        snapshot = updates.get(timeout=5)
        assert snapshot.complete and [lease.id for lease in snapshot.leases] == ["l1"]
        wait_for(lambda: statuses[-1] == (LIVE, "test"), timeout=5, what="live")
        fleet.apply_update(snapshot)

        # Three events for one lease come as one batch, with the lease fetched once.
        daemon.leases["l1"] = pb.Lease(id="l1", state=pb.LEASE_READY, expires_at=99.0)
        daemon.calls.clear()
        for seq, state in enumerate(("LOADING", "LOADING", "READY"), start=1):
            daemon.events.put(
                pb.Event(seq=seq, at=seq, kind="lease", id="l1", state=state, lease_id="l1")
            )
        batch = updates.get(timeout=5)
        assert [e.seq for e in batch.events] == [1, 2, 3]
        assert daemon.calls == ["status l1"] and batch.leases[0].expires_at == 99.0
        fleet.apply_update(batch)
        assert fleet.leases["l1"].state == pb.LEASE_READY

        # The stream breaks: unreachable, then a fresh snapshot once back.
        daemon.up.clear()
        daemon.events.put(None)
        wait_for(lambda: statuses[-1][0] in (UNREACHABLE, CONNECTING), timeout=5, what="loss")
        daemon.leases.clear()
        daemon.up.set()
        again = updates.get(timeout=5)
        assert again.complete and again.leases == []
        fleet.apply_update(again)
        assert fleet.leases == {}
        wait_for(lambda: statuses[-1] == (LIVE, "test"), timeout=5, what="live again")
    finally:
        feed.stop()
    assert not feed.running
