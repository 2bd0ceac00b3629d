"""Revival: a server whose processes die is restarted and its leases' models loaded again;
one that keeps crashing backs off, and its leases go elsewhere once, then fail with the
crash history. Driven through the fake backend, a manual clock and fake sidecar reports."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Harness, MakeHarness, pairs, request, served
from tms_core.backends import local
from tms_core.domain import Lease, LeaseState, ServerState
from tms_core.lease_request import LeaseOptions


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    harness = await make_harness(
        servers={"max_restarts": 2, "restart_backoff": 1.0, "max_servers": 2}
    )
    harness.backend.revives_servers = True
    return harness


async def ready(h: Harness, lease: Lease) -> Lease:
    """The server's sidecar (of the current generation) reports the lease's models READY."""
    assert lease.server_id is not None
    generation = h.manager.outbox.generation(lease.server_id)
    await h.manager.report(
        lease.server_id,
        triton_ready=True,
        models=served(sorted(pairs(lease))),
        generation=generation,
    )
    return h.manager.snapshot(lease.id)


def events_of(h: Harness, kind: str, ident: str) -> list[tuple[str, str]]:
    kept = h.manager.events.kept()
    return [(e.state, e.reason) for e in kept if e.kind == kind and e.id == ident]


async def test_a_dead_tritonserver_is_restarted_and_its_lease_is_ready_again(h: Harness) -> None:
    m = h.manager
    lease = await ready(h, await m.acquire([request("a")], LeaseOptions(duration_s=60)))
    assert lease.state is LeaseState.READY
    sid = lease.server_id
    assert sid is not None
    old_port, old_generation = m.servers[sid].http_port, m.outbox.generation(sid)

    h.backend.dead[sid] = "tritonserver exited with code -9"
    await m.tick()
    # Restarted at once (the first restart has no backoff), on new ports.
    assert h.backend.restarted == [sid]
    server = m.servers[sid]
    assert server.state is ServerState.STARTING and server.http_port != old_port
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.LOADING
    assert lease.reason == (
        "server restarting after tritonserver exited with code -9 (restart 1 of 2)"
    )
    # The old sidecar's last words (an earlier generation) change nothing.
    await m.report(sid, triton_ready=False, models=[], generation=old_generation)
    assert m.snapshot(lease.id).state is LeaseState.LOADING

    h.clock.advance(5)
    lease = await ready(h, lease)
    assert lease.state is LeaseState.READY and lease.reason == ""
    assert m.servers[sid].state is ServerState.RUNNING
    # Its time counts from READY again: the crash did not cost the holder.
    assert lease.expires_at == h.clock.now() + 60
    assert [s for s, _ in events_of(h, "lease", lease.id)][-2:] == ["LOADING", "READY"]
    assert ("STARTING", "restarting after tritonserver exited with code -9 (restart 1 of 2)") in (
        events_of(h, "server", sid)
    )


async def test_a_dead_sidecar_is_replaced_and_the_lease_stays_ready(h: Harness) -> None:
    m = h.manager
    lease = await ready(h, await m.acquire([request("a")]))
    sid = lease.server_id
    assert sid is not None
    h.backend.dead[sid] = "sidecar exited with code -9"
    await m.tick()
    assert h.backend.sidecars_restarted == [sid] and h.backend.restarted == []
    assert m.snapshot(lease.id).state is LeaseState.READY
    assert events_of(h, "server", sid)[-1] == (
        "SIDECAR_RESTARTED",
        "sidecar exited with code -9 (restart 1 of 2)",
    )


async def test_a_crash_loop_backs_off_then_moves_the_lease_once_then_fails_it(
    h: Harness,
) -> None:
    m = h.manager
    lease = await ready(h, await m.acquire([request("a")]))
    first = lease.server_id
    assert first is not None

    async def crash(sid: str, *, restart_after: float) -> None:
        h.backend.dead[sid] = "tritonserver exited with code -9"  # type: ignore[index]
        await m.tick()
        if restart_after:
            restarts = len(h.backend.restarted)
            assert m.next_deadline() == pytest.approx(h.clock.now() + restart_after)
            h.clock.advance(restart_after - 0.01)
            await m.tick()
            assert len(h.backend.restarted) == restarts  # not before its backoff
            h.clock.advance(0.01)
            await m.tick()
            assert len(h.backend.restarted) == restarts + 1

    await crash(first, restart_after=0)  # restart 1: at once
    await crash(first, restart_after=1.0)  # restart 2: after the backoff
    await crash(first, restart_after=0)  # a third crash: over max_restarts
    lease = m.snapshot(lease.id)
    assert first not in m.servers
    # Placed elsewhere: a new server loads it.
    assert lease.state is LeaseState.LOADING and lease.server_id not in (None, first)
    pending_reason = [r for s, r in events_of(h, "lease", lease.id) if s == "PENDING"][-1]
    assert pending_reason.startswith(f"server {first} crashed 3 times: ")
    assert pending_reason.endswith("; placing it elsewhere")

    second = lease.server_id
    assert second is not None
    lease = await ready(h, lease)
    await crash(second, restart_after=0)
    await crash(second, restart_after=1.0)
    await crash(second, restart_after=0)
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.FAILED
    assert lease.reason.startswith(f"server {second} crashed 3 times: ")
    assert f"; before that server {first} crashed 3 times: " in lease.reason
    assert lease.reason.count("tritonserver exited with code -9") == 6


async def test_a_server_that_died_at_its_first_start_is_started_once_more_on_new_ports(
    h: Harness,
) -> None:
    # tritonserver exits at once when a port it was given was taken meanwhile.
    m = h.manager
    lease = await m.acquire([request("a")])
    sid = lease.server_id
    assert sid is not None
    old_port = m.servers[sid].http_port
    h.backend.dead[sid] = "tritonserver exited with code 1"
    await m.tick()
    assert h.backend.restarted == [sid] and m.servers[sid].http_port != old_port
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.LOADING
    assert lease.reason.startswith("server restarting after tritonserver exited with code 1")
    lease = await ready(h, lease)
    assert lease.state is LeaseState.READY and m.servers[sid].state is ServerState.RUNNING

    # Once it has been ready, it is revived as any server is (the failed start counts as its
    # first crash, so this restart comes after the backoff).
    h.backend.dead[sid] = "tritonserver exited with code -9"
    await m.tick()
    h.clock.advance(1.0)
    await m.tick()
    assert h.backend.restarted == [sid, sid]
    assert m.snapshot(lease.id).state is LeaseState.LOADING


async def test_a_server_that_fails_to_start_twice_fails_its_leases_where_they_are(
    h: Harness,
) -> None:
    m = h.manager
    lease = await m.acquire([request("a")])
    sid = lease.server_id
    assert sid is not None
    h.backend.dead[sid] = "tritonserver exited with code 1"
    await m.tick()
    assert h.backend.restarted == [sid]
    h.backend.dead[sid] = "tritonserver exited with code 1"
    await m.tick()
    lease = m.snapshot(lease.id)
    # A bad binary or argument fails every start: no third, and no other server tried.
    assert h.backend.restarted == [sid]
    assert lease.state is LeaseState.FAILED and lease.server_id == sid
    assert lease.reason.startswith(f"server {sid}: failed to start twice: ")
    assert lease.reason.count("tritonserver exited with code 1") == 2


async def test_a_server_not_ready_in_time_at_its_first_start_is_not_restarted(
    h: Harness,
) -> None:
    m = h.manager
    lease = await m.acquire([request("a")])
    assert lease.server_id is not None
    h.clock.advance(h.settings.servers.start_timeout + 1)
    await m.tick()
    lease = m.snapshot(lease.id)
    assert lease.state is LeaseState.FAILED and h.backend.restarted == []
    assert "not ready within" in lease.reason


async def test_a_dead_router_is_started_again_with_an_event_and_its_pid_kept(
    h: Harness,
) -> None:
    m = h.manager
    revived: list[int | None] = [None, 4242]

    async def revive_router() -> int | None:
        return revived.pop(0) if revived else None

    h.backend.revive_router = revive_router  # type: ignore[method-assign]
    await m.tick()  # the router runs: nothing happens
    assert [e for e in m.events.kept() if e.kind == "router"] == []
    await m.tick()  # it died: a new one, pid 4242
    [event] = [e for e in m.events.kept() if e.kind == "router"]
    assert (event.state, event.reason) == (
        "RESTARTED",
        "the router had exited; pid 4242 serves the lease and name addresses again",
    )
    # The next daemon adopts that router, not the dead one.
    assert (await h.store.load_extras()).meta["router_pid"] == "4242"


def test_a_port_a_live_lease_has_is_not_given_to_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lease's ports are bound by the router only once it applies its routes: meanwhile
    (a router being restarted, a daemon killed before publishing) the OS may offer them
    again, and two leases on one port would share an address."""
    offered = [[7001, 7009], [7004, 7005]]
    monkeypatch.setattr(local, "free_ports", lambda count: offered.pop(0))
    assert local.pick_ports(2, {7001, 7002}) == [7004, 7005]
    assert offered == []
