"""Lease names, usage-based renewal, pools, the allowlist, shared models and events, with
real tritonserver processes."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.helpers import add_sub_http, example, index
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError
from tms_core.lease_request import LeaseOptions
from tms_core.manager.reconciler import ACTIVITY_FRESH_S

pytestmark = pytest.mark.triton

MiB = 1024**2
A = np.array([1, 2, 3, 4], dtype=np.float32)


def small_servers(tmp_path: Path) -> str:
    """A config where one server holds one 64 MiB lease, so a second lease needs another."""
    config = tmp_path / "tms.yaml"
    config.write_text("servers:\n  memory: 100MiB\n  idle_grace: 1s\n")
    return f"--config={config}"


def add_sub_fresh_connection(address: str) -> str:
    """One request on a new TCP connection, as a client that reconnects would send it."""
    host, _, port = address.rpartition(":")
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": A.tolist()},
                {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": A.tolist()},
            ]
        }
    )
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", "/v2/models/add_sub/infer", body=body)
        response = conn.getresponse()
        data = json.loads(response.read())
        if response.status == 200 and data["outputs"][0]["data"] == (A + A).tolist():
            return ""
        return f"HTTP {response.status}: {data}"
    except (OSError, ValueError, KeyError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def inference_count(server_http: str, model: str) -> int:
    host, _, port = server_http.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", f"/v2/models/{model}/stats")
        stats = json.loads(conn.getresponse().read())
        return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])
    finally:
        conn.close()


def test_name_repointed_while_a_client_calls_it(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(small_servers(tmp_path))
    *_, old = daemon.client.acquire([example("add_sub", 64 * MiB)], LeaseOptions(name="adder"))
    assert old.state == pb.LEASE_READY and old.name == "adder"
    (record,) = daemon.client.list_names()
    assert record.lease_id == old.id
    address = record.endpoints.http
    assert address not in (old.endpoints.http, old.endpoints.servers[0].http)

    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def call_in_a_loop() -> None:
        while not stop.is_set():
            results.append((time.time(), add_sub_fresh_connection(address)))

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        wait_for(lambda: len(results) > 20, timeout=10, what="the client loop to get going")
        # Exclusive: a lease for the same model would otherwise share the old lease's copy.
        new = list(
            daemon.client.acquire(
                [example("add_sub", 64 * MiB)], LeaseOptions(name="adder", exclusive=True)
            )
        )[-1]
        assert new.state == pb.LEASE_READY
        assert new.server_id != old.server_id
        switched_at = time.time()
        (record,) = daemon.client.list_names()
        assert record.lease_id == new.id and record.next_lease_id == ""
        new_server = new.endpoints.servers[0].http
        wait_for(
            lambda: inference_count(new_server, "add_sub") >= 10,
            timeout=10,
            what="calls to the name to reach the new lease's server",
        )
        daemon.client.release(old.id)
        released_at = time.time()
        count_before = len(results)
        wait_for(lambda: len(results) > count_before + 20, timeout=10, what="calls after release")
    finally:
        stop.set()
        caller.join()
    failures = [(round(at - switched_at, 3), error) for at, error in results if error]
    assert not failures, (
        f"{len(failures)} of {len(results)} calls failed across the switch "
        f"(seconds after it, error): {failures[:5]}; released at {released_at - switched_at:.3f}"
    )
    assert any(at > switched_at for at, _ in results)
    assert daemon.client.status(new.id).name == "adder"
    assert daemon.client.status(old.id).name == ""


def test_name_rules_and_missing_names(daemon: Daemon) -> None:
    lease = list(daemon.client.acquire([example("add_sub")]))[-1]
    with pytest.raises(ClientError, match=r"^name: 'Bad_Name' is not a DNS-1123 label"):
        daemon.client.set_name("Bad_Name", lease.id)
    with pytest.raises(ClientError, match="lease name 'nope' not found"):
        daemon.client.delete_name("nope")
    record = daemon.client.set_name("good-name", lease.id)
    assert record.lease_id == lease.id
    # The name has addresses of its own that serve the lease's models.
    total, _ = add_sub_http(record.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)
    daemon.client.delete_name("good-name")
    assert daemon.client.list_names() == []


def test_activity_keeps_a_used_lease_and_ends_an_idle_one(daemon: Daemon) -> None:
    used = list(
        daemon.client.acquire([example("add_sub")], LeaseOptions(duration_s=2, activity_window_s=2))
    )[-1]
    idle = list(
        daemon.client.acquire(
            [example("blob_classifier")], LeaseOptions(duration_s=2, activity_window_s=2)
        )
    )[-1]
    assert used.state == idle.state == pb.LEASE_READY
    assert used.activity_window_s == 2

    # Use one lease for well past its minimum duration.
    last_call = 0.0
    while time.time() < used.expires_at + 3:
        add_sub_http(used.endpoints.http, A, A)
        last_call = time.time()
        time.sleep(0.25)  # pacing the client's calls, not waiting for a result
    assert daemon.client.status(used.id).state == pb.LEASE_READY

    # The idle one ended at its minimum duration, once a report read after it showed that
    # no inference ever renewed it.
    wait_for(
        lambda: daemon.client.status(idle.id).state == pb.LEASE_EXPIRED,
        timeout=ACTIVITY_FRESH_S + 5.0,
        what="the idle lease to expire",
    )
    ended_idle = daemon.client.status(idle.id)
    assert 0 <= ended_idle.updated_at - idle.expires_at < ACTIVITY_FRESH_S + 1.0

    # Once calls stop, the used one ends one window after its last inference (and the wait
    # for a report that proves it idle).
    *_, ended = daemon.client.follow(used.id)
    assert ended.state == pb.LEASE_EXPIRED
    assert ended.last_activity_at == pytest.approx(last_call, abs=0.5)
    assert 2.0 <= ended.updated_at - ended.last_activity_at < 2.0 + ACTIVITY_FRESH_S + 1.0


def test_pool_quota_placement_and_waiting(daemon: Daemon) -> None:
    daemon.client.create_pool("shared", quota_per_server=2, max_servers=1)
    *_, first = daemon.client.acquire([example("add_sub")], LeaseOptions(pool="shared", quota=2))
    assert first.state == pb.LEASE_READY and first.pool == "shared"
    status = daemon.client.pool_status("shared")
    assert [s.server_id for s in status.servers] == [first.server_id]
    assert status.servers[0].quota_used == 2 and status.servers[0].quota_free == 0

    # The pool is full: the next lease waits, saying why, and its stream stays open.
    updates = daemon.client.acquire(
        [example("blob_classifier")], LeaseOptions(pool="shared", quota=1)
    )
    waiting = next(updates)
    assert waiting.state == pb.LEASE_PENDING
    assert "pool shared is full" in waiting.reason
    daemon.client.release(first.id)
    placed = [u for u in updates][-1]
    assert placed.state == pb.LEASE_READY and placed.pool == "shared"

    with pytest.raises(ClientError, match="needs 3 quota"):
        list(daemon.client.acquire([example("add_sub")], LeaseOptions(pool="shared", quota=3)))
    with pytest.raises(ClientError, match=r"^pool: no pool named 'missing'"):
        list(daemon.client.acquire([example("add_sub")], LeaseOptions(pool="missing", quota=1)))
    with pytest.raises(ClientError, match="still holds leases"):
        daemon.client.delete_pool("shared")
    daemon.client.release(placed.id)
    daemon.client.delete_pool("shared")
    assert daemon.client.list_pools() == []


def test_pool_minimum_servers_are_kept_running(daemon: Daemon) -> None:
    daemon.client.create_pool("warm", quota_per_server=4, max_servers=2, min_servers=1)
    wait_for(
        lambda: [s.state for s in daemon.client.pool_status("warm").servers] == ["RUNNING"],
        timeout=20,
        what="the pool's minimum server to start",
    )
    (server,) = daemon.client.pool_status("warm").servers
    *_, lease = daemon.client.acquire([example("add_sub")], LeaseOptions(pool="warm", quota=1))
    # A lease joins the warm server instead of starting one.
    assert lease.server_id == server.server_id
    daemon.client.release(lease.id)
    # Idle, but the pool's minimum: it outlives the idle grace (1 s here).
    deadline = time.time() + 3
    while time.time() < deadline:
        assert [s.server_id for s in daemon.client.pool_status("warm").servers] == [
            server.server_id
        ]
        time.sleep(0.2)  # sampling for the whole period, not waiting for a result


def test_allowlist_guards_the_triton_binary(daemon: Daemon, tmp_path: Path) -> None:
    (default,) = daemon.client.allowlist()
    assert default.endswith("/tritonserver")
    with pytest.raises(
        ClientError, match=r"^tritonserver: /usr/bin/true is not on the Triton allowlist"
    ):
        list(
            daemon.client.acquire([example("add_sub")], LeaseOptions(tritonserver="/usr/bin/true"))
        )
    with pytest.raises(ClientError, match=r"^tritonserver: .* is not on the Triton allowlist"):
        daemon.client.create_pool(
            "p", quota_per_server=1, max_servers=1, tritonserver="/usr/bin/true"
        )
    with pytest.raises(ClientError, match=r"^tritonserver: .*missing is not an executable file"):
        daemon.client.allowlist_add(str(tmp_path / "missing"))
    assert daemon.client.allowlist_add("/usr/bin/true") == [default, "/usr/bin/true"]
    pool = daemon.client.create_pool(
        "p", quota_per_server=1, max_servers=1, tritonserver="/usr/bin/true"
    )
    assert pool.tritonserver == "/usr/bin/true"
    with pytest.raises(ClientError, match="used by pools p"):
        daemon.client.allowlist_remove("/usr/bin/true")
    daemon.client.delete_pool("p")
    assert daemon.client.allowlist_remove("/usr/bin/true") == [default]


def test_shared_model_stays_loaded_until_the_last_lease_ends(daemon: Daemon) -> None:
    first = list(daemon.client.acquire([example("add_sub")]))[-1]
    second = list(daemon.client.acquire([example("add_sub")]))[-1]
    assert first.server_id == second.server_id
    server = first.endpoints.servers[0].http
    assert daemon.client.release(first.id).state == pb.LEASE_RELEASED
    assert index(server) == {"add_sub": "READY"}
    total, _ = add_sub_http(second.endpoints.http, A, A)
    np.testing.assert_allclose(total, A + A)
    assert daemon.client.release(second.id).state == pb.LEASE_RELEASED
    assert "add_sub" not in index(server)


def test_watch_streams_every_state_change(daemon: Daemon) -> None:
    lease = list(daemon.client.acquire([example("add_sub")]))[-1]
    daemon.client.release(lease.id)
    seen: list[pb.Event] = []
    for event in daemon.client.watch(replay=True):
        seen.append(event)
        if event.kind == "lease" and event.state == "RELEASED":
            break
    mine = [
        (e.kind, e.state) for e in seen if e.lease_id == lease.id or e.server_id == lease.server_id
    ]
    for expected in [
        ("lease", "PENDING"),
        ("lease", "LOADING"),
        ("model", "READY"),
        ("lease", "READY"),
        ("lease", "RELEASING"),
        ("lease", "RELEASED"),
        ("server", "RUNNING"),
    ]:
        assert expected in mine, f"{expected} missing from {mine}"
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


def test_grpc_clients_reach_models_through_the_lease_address(daemon: Daemon) -> None:
    lease = list(daemon.client.acquire([example("add_sub")]))[-1]
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(lease.endpoints.grpc)
    try:
        assert client.is_model_ready("add_sub")
    finally:
        client.close()
