"""Autoscaling with real tritonserver processes: load through a lease's address adds a
replica on another server, which then takes its share of new connections; when the load
stops the replica is drained and removed; no request fails through either change."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import example, refuses
from tms_core.api import tms_pb2 as pb
from tms_core.lease_request import LeaseOptions, autoscale_request
from tms_core.router.routes import applied_path, load_routes, read_applied

pytestmark = pytest.mark.triton

# Each load thread reconnects after this many requests: the router balances connections,
# so a replica added while the load runs gets the connections opened after it is READY.
REQUESTS_PER_CONNECTION = 10


@dataclass
class Load:
    """Bounded load on one address: `threads` clients (HTTP and gRPC alternately), each
    stopping at `max_requests` or after `max_s`, whichever comes first; `pace_s` apart
    when given (a trickle below the lease's target)."""

    http: str
    grpc: str
    threads: int = 4
    max_requests: int = 4000
    max_s: float = 120.0
    pace_s: float = 0.0
    done: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.threads):
            protocol: Any = httpclient if i % 2 == 0 else grpcclient
            endpoint = self.http if i % 2 == 0 else self.grpc
            worker = threading.Thread(target=self._run, args=(protocol, endpoint), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        assert not any(w.is_alive() for w in self._workers), "a load thread did not stop"

    def _run(self, protocol: Any, endpoint: str) -> None:
        a = np.array([1, 2, 3, 4], dtype=np.float32)
        b = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
        deadline = time.monotonic() + self.max_s
        sent = 0
        while not self._stop.is_set() and sent < self.max_requests:
            if time.monotonic() > deadline:
                return
            client = protocol.InferenceServerClient(endpoint)
            try:
                for _ in range(REQUESTS_PER_CONNECTION):
                    inputs = [
                        protocol.InferInput("INPUT0", [4], "FP32"),
                        protocol.InferInput("INPUT1", [4], "FP32"),
                    ]
                    inputs[0].set_data_from_numpy(a)
                    inputs[1].set_data_from_numpy(b)
                    sent += 1
                    try:
                        result = client.infer("add_sub", inputs)
                        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
                    except Exception as exc:  # every failure is the test's finding
                        with self._lock:
                            self.failures.append(f"{endpoint}: {exc!r}"[:300])
                    with self._lock:
                        self.done += 1
                    if self.pace_s and self._stop.wait(self.pace_s):
                        return
            finally:
                client.close()


def out_of_address(daemon: Daemon, address: pb.Endpoints, replica: pb.Replica) -> bool:
    """Whether the table the router has put in force spreads no new connection to `replica`
    from the lease's `address` (HTTP and gRPC)."""
    routes = daemon.state_dir / "routes.json"
    table = load_routes(routes)
    if read_applied(applied_path(routes)) != table.version:
        return False
    gone = {(address.http, replica.http), (address.grpc, replica.grpc)}
    return not any((r.listen, b) in gone for r in table.routes for b in r.backends)


def inferences(http: str) -> int:
    """Successful add_sub inferences Triton at `http` counted (its own statistics)."""
    client = httpclient.InferenceServerClient(http)
    try:
        stats = client.get_inference_statistics("add_sub")
    except Exception:
        return 0  # gone (scaled down and stopped)
    finally:
        client.close()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


def serving(lease: pb.Lease) -> list[pb.ServerEndpoints]:
    """The servers the lease's address leads to now (its READY replicas, none draining)."""
    return list(lease.endpoints.servers)


def alone(lease: pb.Lease) -> bool:
    """Only the lease's own server serves it, and no replica (draining or not) is left."""
    return [s.server_id for s in serving(lease)] == [lease.server_id] and not lease.replicas


def test_load_adds_a_replica_that_serves_and_is_removed_when_it_stops(daemon: Daemon) -> None:
    scale = autoscale_request(
        1,
        2,
        "nv_inference_count_per_second",
        # Far below what the load makes and far above nothing: both decisions are clear.
        2.0,
        up_window_s=1.0,
        down_window_s=3.0,
        up_cooldown_s=0.5,
        down_cooldown_s=2.0,
        drain_s=1.0,
    )
    updates = list(
        daemon.client.acquire(
            [example("add_sub", 64 * 1024**2)],
            LeaseOptions(duration_s=600, autoscale=scale),
        )
    )
    lease = updates[-1]
    assert lease.state == pb.LEASE_READY, lease.reason
    assert len(serving(lease)) == 1
    first = serving(lease)[0]
    assert first.server_id == lease.server_id

    load = Load(lease.endpoints.http, lease.endpoints.grpc).start()
    try:
        wait_for(
            lambda: len(serving(daemon.client.status(lease.id))) == 2,
            timeout=60,
            what="a second replica serving under load",
        )
        now = daemon.client.status(lease.id)
        assert now.replicas_wanted == 2
        [second] = [s for s in serving(now) if s.server_id != lease.server_id]
        # Placement put it on a server of its own (a replica avoids its lease's servers).
        assert second.server_id and second.http != first.http
        before = inferences(second.http)
        # New connections through the lease's one address reach the new replica too.
        wait_for(
            lambda: inferences(second.http) > before + 20,
            timeout=30,
            what="the new replica to receive requests through the lease's address",
        )
        assert inferences(first.http) > 0
        # Under load the lease keeps both (no reading read as idle while it was not).
        assert daemon.client.status(lease.id).replicas_wanted == 2
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.done > 0

    scaled_up = [
        e
        for e in daemon.client.watch(follow=False)
        if e.kind == "lease" and e.id == lease.id and e.state == "SCALED_UP"
    ]
    assert scaled_up and "nv_inference_count_per_second" in scaled_up[0].reason

    # Idle now: after the down window the replica drains, then goes.
    wait_for(
        lambda: daemon.client.status(lease.id).replicas_wanted == 1,
        timeout=60,
        what="the lease to scale back down to one replica",
    )
    # The router applies the table that takes the draining replica out of the address a few
    # milliseconds after the commit the API shows; a connection opened in between would still
    # be kept on the replica past its drain (connections already open are left where they are).
    wait_for(
        lambda: out_of_address(daemon, lease.endpoints, second),
        timeout=10,
        what="the router to take the draining replica out of the lease's address",
    )
    # A trickle during the drain and after it (1/s, under the target) is served throughout.
    quiet = Load(lease.endpoints.http, lease.endpoints.grpc, threads=1, pace_s=1.0).start()
    try:
        wait_for(
            lambda: alone(daemon.client.status(lease.id)),
            timeout=60,
            what="the drained replica to be removed",
        )
    finally:
        quiet.stop()
    assert quiet.failures == [], quiet.failures[:5]
    assert quiet.done > 0
    final = daemon.client.status(lease.id)
    assert final.state == pb.LEASE_READY
    # The replica's server, empty now, stops after its idle grace like any other.
    wait_for(lambda: refuses(second.http), timeout=30, what="the replica's server to stop")
    events = [e.state for e in daemon.client.watch(follow=False) if e.id == lease.id]
    assert "SCALED_DOWN" in events
