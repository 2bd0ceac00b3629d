"""Identity on every call: tokens and roles, tenants' ownership, sidecar credentials, quotas
and the audit log, over a real loopback gRPC channel on the fake backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.unit.conftest import GiB, Harness, MakeHarness, request
from tests.unit.security_api import SecureApi, secure_api
from tms_core.api import tms_pb2 as pb
from tms_core.domain import LeaseAutoscale, LeaseState
from tms_core.errors import Unauthenticated
from tms_core.identity.tokens import TokenRegistry
from tms_core.lease_request import LeaseOptions

T = 5.0


def acquire_request(name: str = "m", memory: int = GiB, gpus: int = 0) -> pb.AcquireRequest:
    return pb.AcquireRequest(
        models=[pb.ModelSpec(name=name, uri=f"file:///models/{name}", memory_bytes=memory)],
        gpus=gpus,
    )


async def first(call: grpc.aio.UnaryStreamCall) -> pb.Lease:
    message = await call.read()
    call.cancel()
    assert isinstance(message, pb.Lease)
    return message


async def code_of(awaitable: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value.code(), caught.value.details() or ""


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[SecureApi]:
    await harness.manager.recover()
    async for made in secure_api(harness):
        yield made


async def token(api: SecureApi, name: str, role: str, tenant: str = "") -> str:
    made = await api.identity(api.admin).CreateToken(
        pb.TokenRequest(name=name, role=role, tenant=tenant), timeout=T
    )
    return made.secret


async def tenant(api: SecureApi, name: str, over_quota: str = "refuse", **quota: int) -> None:
    await api.identity(api.admin).PutTenant(
        pb.Tenant(name=name, over_quota=over_quota, quota=pb.TenantQuota(**quota)), timeout=T
    )


async def test_no_token_is_unauthenticated_and_a_wrong_one_too(api: SecureApi) -> None:
    code, message = await code_of(api.leases().List(pb.ListRequest(), timeout=T))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "no API token" in message
    code, _ = await code_of(api.leases("tms_forged").List(pb.ListRequest(), timeout=T))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    await api.leases(api.admin).List(pb.ListRequest(), timeout=T)


async def test_a_viewer_reads_but_cannot_acquire(api: SecureApi) -> None:
    viewer = await token(api, "watcher", "viewer")
    await api.leases(viewer).List(pb.ListRequest(), timeout=T)
    code, message = await code_of(first(api.leases(viewer).Acquire(acquire_request())))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "LeaseService.Acquire needs the user role" in message
    assert "'watcher' has role viewer" in message
    assert api.h.manager.list_leases() == []


async def test_a_user_cannot_release_or_rename_another_tenants_lease(api: SecureApi) -> None:
    await tenant(api, "team-a")
    await tenant(api, "team-b")
    alice = await token(api, "alice", "user", "team-a")
    bob = await token(api, "bob", "user", "team-b")
    lease = await first(api.leases(alice).Acquire(acquire_request()))
    before = api.h.manager.snapshot(lease.id)
    assert before.tenant == "team-a"

    code, message = await code_of(api.leases(bob).Release(pb.LeaseRef(id=lease.id), timeout=T))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert f"lease '{lease.id}' belongs to tenant 'team-a'" in message
    code, _ = await code_of(api.leases(bob).Renew(pb.RenewRequest(id=lease.id), timeout=T))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    code, _ = await code_of(
        api.names(bob).SetName(pb.NameRequest(name="x", lease_id=lease.id), timeout=T)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert api.h.manager.snapshot(lease.id) == before
    assert api.h.manager.list_names() == []

    # Its own tenant's user, and an admin, may.
    await api.leases(alice).Renew(pb.RenewRequest(id=lease.id), timeout=T)
    released = await api.leases(api.admin).Release(pb.LeaseRef(id=lease.id), timeout=T)
    assert released.state in (pb.LEASE_RELEASING, pb.LEASE_RELEASED)


async def test_a_user_cannot_manage_pools_tokens_or_the_allowlist(api: SecureApi) -> None:
    await tenant(api, "team-a")
    alice = await token(api, "alice", "user", "team-a")
    code, message = await code_of(
        api.identity(alice).CreateToken(pb.TokenRequest(name="x", role="admin"), timeout=T)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "IdentityService.CreateToken needs the admin role" in message


async def test_a_revoked_token_fails_on_its_next_call(api: SecureApi) -> None:
    viewer = await token(api, "temp", "viewer")
    stub = api.leases(viewer)
    await stub.List(pb.ListRequest(), timeout=T)
    await api.identity(api.admin).RevokeToken(pb.TokenRef(name="temp"), timeout=T)
    code, message = await code_of(stub.List(pb.ListRequest(), timeout=T))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "'temp' was revoked" in message


async def test_an_expired_token_fails(api: SecureApi) -> None:
    made = await api.identity(api.admin).CreateToken(
        pb.TokenRequest(name="short", role="viewer", expires_in_s=60), timeout=T
    )
    await api.leases(made.secret).List(pb.ListRequest(), timeout=T)
    api.h.clock.advance(61)
    code, message = await code_of(api.leases(made.secret).List(pb.ListRequest(), timeout=T))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in message


async def test_tokens_are_stored_hashed_and_listed_without_secrets(api: SecureApi) -> None:
    secret = await token(api, "ci", "viewer")
    listed = await api.identity(api.admin).ListTokens(pb.Empty(), timeout=T)
    assert {t.name for t in listed.tokens} == {"root", "ci"}
    assert all(t.secret == "" for t in listed.tokens)
    stored = await api.h.store.load_tokens()
    assert secret not in repr(stored)


def _report(server_id: str, lease: pb.Lease) -> pb.SidecarReport:
    return pb.SidecarReport(
        server_id=server_id,
        triton_ready=True,
        models=[pb.ModelReport(name=m.name, uri=m.uri, state=pb.MODEL_READY) for m in lease.models],
    )


async def test_forged_reports_change_nothing(api: SecureApi) -> None:
    lease = await first(api.leases(api.admin).Acquire(acquire_request()))
    assert lease.state == pb.LEASE_LOADING
    server_id = lease.server_id
    viewer = await token(api, "viewer", "viewer")
    other_server = api.sidecars.credential("s-someone-else")
    for credential in [None] * 20 + [api.admin, viewer, other_server, "tmss_x.y"]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.sidecar(credential).Report(_report(server_id, lease), timeout=T)
        assert caught.value.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert api.h.manager.snapshot(lease.id).state.value == "LOADING"
    # The server's own credential is accepted: the same report makes the lease READY.
    await api.sidecar(api.sidecars.credential(server_id)).Report(
        _report(server_id, lease), timeout=T
    )
    assert api.h.manager.snapshot(lease.id).state.value == "READY"


async def test_a_sidecar_credential_cannot_call_the_lease_api(api: SecureApi) -> None:
    credential = api.sidecars.credential("s-1")
    code, message = await code_of(api.leases(credential).List(pb.ListRequest(), timeout=T))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "sidecar credential is good only for SidecarService" in message
    code, message = await code_of(
        api.sidecar(credential).Report(pb.SidecarReport(server_id="s-2"), timeout=T)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "for server 's-1' only" in message


async def test_a_quota_refusal_names_the_quota(api: SecureApi) -> None:
    await tenant(api, "small", host_memory_bytes=2 * GiB, leases=5)
    user = await token(api, "u", "user", "small")
    await first(api.leases(user).Acquire(acquire_request("a", memory=GiB)))
    code, message = await code_of(
        first(api.leases(user).Acquire(acquire_request("b", memory=2 * GiB)))
    )
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'small' quota host_memory is 2.0 GiB: 1.0 GiB in use" in message
    status = await api.identity(user).TenantStatus(pb.TenantRef(name="small"), timeout=T)
    assert (status.used.leases, status.used.host_memory_bytes) == (1, GiB)


async def test_concurrent_acquires_against_a_quota_of_k_admit_exactly_k(api: SecureApi) -> None:
    await tenant(api, "k3", leases=3)
    user = await token(api, "u", "user", "k3")
    stub = api.leases(user)
    results = await asyncio.gather(
        *(first(stub.Acquire(acquire_request(f"m{i}", memory=GiB // 8))) for i in range(12)),
        return_exceptions=True,
    )
    admitted = [r for r in results if isinstance(r, pb.Lease)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(admitted) == 3
    assert len(refused) == 9
    assert all(r.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert all("quota leases is 3" in (r.details() or "") for r in refused)
    assert len([x for x in api.h.manager.list_leases() if x.tenant == "k3"]) == 3


async def test_over_quota_wait_admits_the_waiting_lease_once_room_is_made(
    api: SecureApi,
) -> None:
    await tenant(api, "queue", over_quota="wait", leases=1)
    user = await token(api, "u", "user", "queue")
    one = await first(api.leases(user).Acquire(acquire_request("a")))
    two = await first(api.leases(user).Acquire(acquire_request("b")))
    assert two.state == pb.LEASE_PENDING
    assert "waiting for tenant quota: tenant 'queue' quota leases is 1" in two.reason
    await api.leases(user).Release(pb.LeaseRef(id=one.id), timeout=T)
    after = api.h.manager.snapshot(two.id)
    assert after.state.value == "LOADING"


async def test_the_audit_log_records_who_what_and_the_outcome_without_credentials(
    api: SecureApi,
) -> None:
    await tenant(api, "team-a")
    alice = await token(api, "alice", "user", "team-a")
    lease = await first(api.leases(alice).Acquire(acquire_request()))
    await code_of(api.leases(alice).Release(pb.LeaseRef(id="l-nothere"), timeout=T))
    await code_of(api.leases().List(pb.ListRequest(), timeout=T))
    entries = (await api.identity(api.admin).Audit(pb.AuditRequest(), timeout=T)).entries
    seen = [(e.who, e.method, e.target, e.outcome) for e in entries]
    assert ("root", "IdentityService.CreateToken", "alice", "OK") in seen
    assert ("alice", "LeaseService.Acquire", lease.id, "OK") in seen
    assert ("alice", "LeaseService.Release", "l-nothere", "NOT_FOUND") in seen
    assert ("anonymous", "LeaseService.List", "", "UNAUTHENTICATED") in seen
    everything = repr(entries)
    assert alice not in everything and api.admin not in everything
    only_a = await api.identity(api.admin).Audit(pb.AuditRequest(tenant="team-a"), timeout=T)
    assert {e.who for e in only_a.entries} == {"alice"}


async def test_whoami(api: SecureApi, make_harness: MakeHarness) -> None:
    await tenant(api, "team-a")
    alice = await token(api, "alice", "user", "team-a")
    me = await api.identity(alice).WhoAmI(pb.Empty(), timeout=T)
    assert (me.name, me.role, me.tenant) == ("alice", "user", "team-a")


async def test_a_token_remembered_while_its_revocation_was_written_still_fails_after_it(
    harness: Harness,
) -> None:
    # Verified tokens are remembered (not hashed again); a call verified while the revocation
    # is being written must not leave the token remembered as good once it is answered.
    writing = asyncio.Event()
    written = asyncio.Event()

    async def persist(token: object) -> None:
        if writing.is_set():
            return
        writing.set()
        await written.wait()

    registry = TokenRegistry([], clock=harness.clock, persist=persist)
    writing.set()
    _, secret = await registry.create("temp", "viewer")
    writing.clear()
    assert registry.authenticate(secret).name == "temp"
    revoking = asyncio.create_task(registry.revoke("temp"))
    await writing.wait()
    assert registry.authenticate(secret).name == "temp"  # not revoked yet: still good
    written.set()
    await revoking
    with pytest.raises(Unauthenticated, match="'temp' was revoked"):
        registry.authenticate(secret)


async def test_an_activator_token_wakes_any_tenants_lease_and_does_nothing_else(
    api: SecureApi,
) -> None:
    h = api.h
    await tenant(api, "team-a")
    parks = LeaseOptions(autoscale=LeaseAutoscale(min_replicas=0, max_replicas=1, park_after_s=60))
    lease = await h.make_ready(await h.manager.acquire([request("a", GiB)], parks, tenant="team-a"))
    h.clock.advance(60.0)
    await h.manager.tick()
    assert h.manager.snapshot(lease.id).state is LeaseState.PARKED
    activator = await token(api, "activator", "activator")
    stub = api.leases(activator)

    # No tenant of its own, yet it wakes team-a's lease.
    woken = await stub.Wake(pb.LeaseRef(id=lease.id), timeout=T)
    woke = h.manager.snapshot(lease.id)
    assert woken.id == lease.id and woke.state is not LeaseState.PARKED and woke.woke_at

    refused = {
        "Acquire": first(stub.Acquire(acquire_request())),
        "List": stub.List(pb.ListRequest(), timeout=T),
        "Status": stub.Status(pb.LeaseRef(id=lease.id), timeout=T),
        "Renew": stub.Renew(pb.RenewRequest(id=lease.id), timeout=T),
        "Release": stub.Release(pb.LeaseRef(id=lease.id), timeout=T),
    }
    for method, call in refused.items():
        code, message = await code_of(call)
        assert code is grpc.StatusCode.PERMISSION_DENIED, method
        needs = "viewer" if method in ("List", "Status") else "user"
        assert f"LeaseService.{method} needs the {needs} role" in message, message
        assert "token 'activator' has role activator" in message
    code, message = await code_of(api.names(activator).ListNames(pb.Empty(), timeout=T))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    code, _ = await code_of(
        api.identity(activator).CreateToken(pb.TokenRequest(name="x", role="admin"), timeout=T)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert [x.id for x in h.manager.list_leases()] == [lease.id]
    assert h.manager.snapshot(lease.id).tenant == "team-a"

    # A viewer still may not wake.
    viewer = await token(api, "watcher", "viewer")
    code, message = await code_of(api.leases(viewer).Wake(pb.LeaseRef(id=lease.id), timeout=T))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "LeaseService.Wake needs the user (or activator) role" in message
