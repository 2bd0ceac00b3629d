"""Size limits on every request, checked before a servicer sees it (so before anything is
stored): every string, every list and every map of every request message has a bound, the
general ones below unless `LIMITS` names a field's own. A request over one is refused
INVALID_ARGUMENT naming the field (its path in the request) and the limit.

The formats of the fields (model names, DNS-1123 names, label characters) are checked where
they are used (`manager/requests.py`, the servicers); this module bounds only sizes, so that
no call can make the daemon keep, copy or log an unbounded amount of anything. The message as
a whole is bounded by `daemon.max_message_bytes`, which the gRPC server enforces.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tms_core.errors import InvalidArgument

MAX_TEXT = 1024
"""Characters in any string field without a limit of its own (names, ids, paths, reasons)."""
MAX_ENTRIES = 256
"""Entries in any list or map without a limit of its own."""
MAX_KEY = 253
"""Characters of a map's keys (a Kubernetes label key with its prefix)."""

LIMITS: dict[str, int] = {
    # A lease: models, labels, selectors, placement rules.
    "AcquireRequest.models": 64,
    "AcquireRequest.labels": 32,
    "AcquireRequest.node_selector": 32,
    "AcquireRequest.colocate_with": 32,
    "AcquireRequest.avoid": 32,
    "AcquireRequest.gpu_product": 128,
    "AcquireRequest.tritonserver": 4096,
    "AcquireRequest.name": 63,
    "AcquireRequest.pool": 63,
    "Autoscale.metric": 200,
    "ModelSpec.name": 128,
    # Repository URIs carry a bucket, a path and maybe a `#sha256=` pin.
    "ModelSpec.uri": 4096,
    "AllowlistEntry.tritonserver": 4096,
    "Pool.tritonserver": 4096,
    # A sidecar's report: every model its Triton holds, with Triton's error messages.
    "SidecarReport.models": 4096,
    "ModelReport.uri": 4096,
    "ModelReport.error": 8192,
    "SidecarReport.leak": 8192,
}


def check(request: Message) -> None:
    """Raises InvalidArgument for the first field of `request` over its limit."""
    _check(request, "")


def _check(message: Message, path: str) -> None:
    kind = message.DESCRIPTOR.name
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        limit = LIMITS.get(f"{kind}.{field.name}")
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(where, value, field, limit or MAX_ENTRIES)
        elif field.is_repeated:
            cap = limit or MAX_ENTRIES
            if len(value) > cap:
                raise InvalidArgument(where, f"has {len(value)} entries; the limit is {cap}")
            for i, item in enumerate(value):
                _check_value(f"{where}[{i}]", item, field, MAX_TEXT)
        else:
            _check_value(where, value, field, limit or MAX_TEXT)


def _check_map(where: str, value: Any, field: FieldDescriptor, cap: int) -> None:
    if len(value) > cap:
        raise InvalidArgument(where, f"has {len(value)} entries; the limit is {cap}")
    entry = field.message_type
    assert entry is not None  # a map field's entries are a message
    value_field = entry.fields_by_name["value"]
    for key, item in value.items():
        if isinstance(key, str) and len(key) > MAX_KEY:
            raise InvalidArgument(where, f"a key is {len(key)} characters; the limit is {MAX_KEY}")
        _check_value(f"{where}[{str(key)[:40]!r}]", item, value_field, MAX_TEXT)


def _check_value(where: str, value: Any, field: FieldDescriptor, cap: int) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _check(value, f"{where}.")
    elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        if len(value) > cap:
            raise InvalidArgument(where, f"is {len(value)} characters; the limit is {cap}")
