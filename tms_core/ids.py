"""Identifier types, so a lease id is never passed where a server id is expected."""

from __future__ import annotations

import secrets
from typing import NewType

LeaseId = NewType("LeaseId", str)
ServerId = NewType("ServerId", str)
ModelName = NewType("ModelName", str)


def new_lease_id() -> LeaseId:
    # Short, URL- and DNS-safe, and still unguessable enough that ids are not sequential.
    return LeaseId("l-" + secrets.token_hex(6))


def new_server_id() -> ServerId:
    return ServerId("s-" + secrets.token_hex(4))
