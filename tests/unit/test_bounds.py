"""Every request field's size is bounded: over a limit, the call is INVALID_ARGUMENT naming the
field and the limit, and nothing is stored (`tms_core/api/bounds.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.unit.conftest import GiB, Harness
from tests.unit.security_api import SecureApi, secure_api
from tms_core.api import bounds
from tms_core.api import tms_pb2 as pb
from tms_core.errors import InvalidArgument

T = 5.0


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[SecureApi]:
    await harness.manager.recover()
    async for made in secure_api(harness):
        yield made


def model(name: str = "m", uri: str = "file:///models/m") -> pb.ModelSpec:
    return pb.ModelSpec(name=name, uri=uri, memory_bytes=GiB)


def acquire(**fields: object) -> pb.AcquireRequest:
    request = pb.AcquireRequest(models=[model()], gpus=0)
    for key, value in fields.items():
        field = getattr(request, key)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(request, key, value)
    return request


def labels(count: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(count)}


def entries(n: int, limit: int) -> str:
    return f"has {n} entries; the limit is {limit}"


def chars(n: int, limit: int) -> str:
    return f"is {n} characters; the limit is {limit}"


OVER = [
    ("models", acquire(models=[model(f"m{i}") for i in range(65)]), "models", entries(65, 64)),
    ("labels", acquire(labels=labels(33)), "labels", entries(33, 32)),
    ("node_selector", acquire(node_selector=labels(33)), "node_selector", entries(33, 32)),
    ("label key", acquire(labels={"k" * 254: "v"}), "labels", f"a key {chars(254, 253)}"),
    ("label value", acquire(labels={"k": "v" * 1025}), "labels['k']", chars(1025, 1024)),
    ("colocate_with", acquire(colocate_with=["a"] * 33), "colocate_with", entries(33, 32)),
    ("avoid entry", acquire(avoid=["a" * 1025]), "avoid[0]", chars(1025, 1024)),
    ("uri", acquire(models=[model(uri="u" * 4097)]), "models[0].uri", chars(4097, 4096)),
    ("model name", acquire(models=[model("m" * 129)]), "models[0].name", chars(129, 128)),
    ("lease name", acquire(name="n" * 64), "name", chars(64, 63)),
    ("gpu_product", acquire(gpu_product="H" * 129), "gpu_product", chars(129, 128)),
    ("tritonserver", acquire(tritonserver="/" + "t" * 4096), "tritonserver", chars(4097, 4096)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "field", "problem"), [o[1:] for o in OVER], ids=[o[0] for o in OVER]
)
async def test_an_acquire_over_a_limit_names_the_field_and_stores_nothing(
    api: SecureApi, request_: pb.AcquireRequest, field: str, problem: str
) -> None:
    call = api.leases(api.admin).Acquire(request_, timeout=T)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"{field}: {problem}"
    assert not api.h.manager.leases
    listed = await api.leases(api.admin).List(pb.ListRequest(include_ended=True), timeout=T)
    assert list(listed.leases) == []


async def test_at_the_limits_a_lease_is_accepted(api: SecureApi) -> None:
    request = acquire(
        labels={f"k{i}": "v" * 63 for i in range(32)},
        colocate_with=[],
        models=[model(f"m{i}") for i in range(3)],
    )
    call = api.leases(api.admin).Acquire(request, timeout=T)
    lease = await call.read()
    call.cancel()
    assert isinstance(lease, pb.Lease)
    assert len(lease.labels) == 32


async def test_other_requests_are_bounded_too(api: SecureApi) -> None:
    admin = api.admin
    long = "x" * 2000
    cases = [
        (api.leases(admin).Renew(pb.RenewRequest(id=long), timeout=T), "id"),
        (api.identity(admin).CreateToken(pb.TokenRequest(name=long, role="viewer")), "name"),
        (api.names(admin).SetName(pb.NameRequest(name="n", lease_id=long), timeout=T), "lease_id"),
        (api.identity(admin).PutTenant(pb.Tenant(name=long), timeout=T), "name"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == f"{field}: {chars(2000, 1024)}"
    assert [t.name for t in api.registry.list()] == ["root"]


async def test_a_sidecar_report_is_bounded(api: SecureApi) -> None:
    credential = api.sidecars.credential("s-1")
    too_many = pb.SidecarReport(
        server_id="s-1", models=[pb.ModelReport(name=f"m{i}") for i in range(4097)]
    )
    long_error = pb.SidecarReport(
        server_id="s-1", models=[pb.ModelReport(name="m", error="e" * 8193)]
    )
    for report, message in (
        (too_many, f"models: {entries(4097, 4096)}"),
        (long_error, f"models[0].error: {chars(8193, 8192)}"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.sidecar(credential).Report(report, timeout=T)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message


def test_every_string_and_list_of_every_request_has_a_bound() -> None:
    # A field with no limit of its own falls under the general ones: a message of every
    # request type with one field just over them is refused.
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            for field in method.input_type.fields:
                request = pb.__dict__[method.input_type.name]()
                if field.type == field.TYPE_STRING and not field.is_repeated:
                    setattr(request, field.name, "x" * (max(bounds.LIMITS.values()) + 1))
                elif field.is_repeated and field.type == field.TYPE_STRING:
                    getattr(request, field.name).extend(["x"] * (bounds.MAX_ENTRIES + 1))
                else:
                    continue
                with pytest.raises(InvalidArgument, match=f"^{field.name}"):
                    bounds.check(request)


async def test_autoscale_replicas_are_bounded(api: SecureApi) -> None:
    request = acquire()
    request.autoscale.CopyFrom(pb.Autoscale(min_replicas=1, max_replicas=1001))
    call = api.leases(api.admin).Acquire(request, timeout=T)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.details() == "autoscale.max_replicas: 1001 is over the limit of 1000"
