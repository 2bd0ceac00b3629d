"""Malformed and adversarial requests to every RPC, and to the lease spec parser: only clean
errors (never INTERNAL or UNKNOWN), the daemon keeps answering, and the state file passes
SQLite's integrity check afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import Harness
from tests.unit.security_api import SecureApi, secure_api
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.cli.spec import spec_from_data
from tms_core.errors import TmsError

CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    # A stream (Follow, Watch, Connect) that is still open when the test stops reading.
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
NAMES = ["", "a", "m", "team-a", "l-0", "s-1", "root", "..", "../../etc", "x" * 300, "é\x00"]
TEXT = st.one_of(st.sampled_from(NAMES), st.text(max_size=40))
NUMBERS = {
    FieldDescriptor.TYPE_DOUBLE: st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308])
    ),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
}


def message(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of the type: each field unset, or set to a value of its type."""
    cls = pb.__dict__.get(descriptor.name) or getattr(pb, descriptor.full_name.split(".")[-1])

    def value(field: Any) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                return st.dictionaries(TEXT, TEXT, max_size=3)
            return message(field.message_type, depth + 1) if depth < 2 else st.none()
        if field.type == FieldDescriptor.TYPE_ENUM:
            return st.integers(0, len(field.enum_type.values) + 2)
        if field.type == FieldDescriptor.TYPE_STRING:
            return TEXT
        return NUMBERS.get(field.type, st.integers(0, 100))

    fields = {}
    for field in descriptor.fields:
        one = value(field)
        is_map = field.type == FieldDescriptor.TYPE_MESSAGE and (
            field.message_type.GetOptions().map_entry
        )
        if field.is_repeated and not is_map:
            one = st.lists(one, max_size=3)
        fields[field.name] = st.one_of(st.none(), one)

    def build(values: dict[str, Any]) -> Any:
        made = cls()
        for name, v in values.items():
            if v is None:
                continue
            target = getattr(made, name) if not isinstance(v, (str, int, float, bool)) else None
            if isinstance(v, dict):
                target.update(v)
            elif isinstance(v, list):
                if (v and isinstance(v[0], (str, int, float, bool))) or not v:
                    target.extend(v)
                else:
                    target.extend(x for x in v if x is not None)
            elif isinstance(v, (str, int, float, bool)):
                try:
                    setattr(made, name, v)
                except ValueError:
                    pass  # an enum out of range: proto3 keeps it, Python refuses it
            else:
                target.CopyFrom(v)
        return made

    return st.fixed_dictionaries(fields).map(build)


METHODS = [
    (service, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[SecureApi]:
    await harness.manager.recover()
    async for made in secure_api(harness):
        yield made


async def _call(api: SecureApi, service: Any, method: Any, request: Any, token: str) -> None:
    channel = api.channel(token)
    stub = getattr(pb_grpc, f"{service.name}Stub")(channel)
    rpc = getattr(stub, method.name)
    try:
        if method.server_streaming:
            call = rpc(request, timeout=0.5)
            async for _ in call:
                break
            call.cancel()
        else:
            await rpc(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in CLEAN, f"{service.name}.{method.name}: {exc.code()} {exc.details()}"
    finally:
        await channel.close()
        api.channels.remove(channel)


@pytest.mark.parametrize(
    ("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS]
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_malformed_requests_get_clean_errors(
    api: SecureApi, service: Any, method: Any, data: st.DataObject
) -> None:
    request = data.draw(message(method.input_type))
    # Revoking the token the test calls with would lock the test out, not the daemon up.
    assume(not (method.name == "RevokeToken" and request.name == "root"))
    server_id = getattr(request, "server_id", "")
    # Metadata must be printable ASCII (the client refuses anything else before sending).
    if not (server_id.isascii() and server_id.isprintable()):
        server_id = "s-1"
    token = data.draw(st.sampled_from([api.admin, api.sidecars.credential(server_id)]))
    await _call(api, service, method, request, token)
    # The daemon still answers, and its state is sound.
    await api.leases(api.admin).List(pb.ListRequest(), timeout=5)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_the_state_file_passes_integrity_check_after_fuzzing(
    api: SecureApi, data: st.DataObject
) -> None:
    # A burst of everything at once, then SQLite's own check of the file.
    requests = [
        (service, method, data.draw(message(method.input_type)))
        for service, method in METHODS
        for _ in range(5)
    ]
    await asyncio.gather(*(_call(api, s, m, r, api.admin) for s, m, r in requests))
    await api.audit.flush()
    with sqlite3.connect(api.h.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=20),
        st.sampled_from(["add_sub", "1h", "-5s", "2GiB", "name=x,uri=y"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["models", "name", "uri", "memory", "duration", "pool", "gpus", "labels", "x"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(data=YAML_VALUES)
def test_the_lease_spec_parser_refuses_cleanly(data: Any) -> None:
    text = yaml.safe_dump(data)
    try:
        spec_from_data(yaml.safe_load(text), base=Path("/tmp"))
    except (ValueError, TmsError) as exc:
        assert str(exc) and "\n" not in str(exc).strip()
