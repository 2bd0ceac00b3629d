"""Domain errors. Each carries the gRPC status it maps to; one interceptor does the mapping.

Messages are one line, name the field or thing at fault, and say what was expected: they are
shown to people as they are.
"""

from __future__ import annotations

import grpc


class TmsError(Exception):
    """Base of every error the daemon reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    title = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TmsError):
    """A request field is malformed or names something that does not exist."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    title = "invalid argument"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class LeaseNotFound(TmsError):
    code = grpc.StatusCode.NOT_FOUND
    title = "not found"

    def __init__(self, lease_id: str) -> None:
        super().__init__(f"no lease with id or name {lease_id!r}")


class NameNotFound(TmsError):
    code = grpc.StatusCode.NOT_FOUND
    title = "not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"lease name {name!r} not found")


class PoolNotFound(TmsError):
    code = grpc.StatusCode.NOT_FOUND
    title = "not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"pool {name!r} not found")


class AlreadyExists(TmsError):
    code = grpc.StatusCode.ALREADY_EXISTS
    title = "already exists"


class PoolInUse(TmsError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    title = "pool in use"


class LeaseEnded(TmsError):
    """The lease exists but has ended, so it can no longer be renewed."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    title = "lease ended"


class CapacityExceeded(TmsError):
    """The request can never fit, whatever is released."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    title = "too large"


class TritonNotFound(TmsError):
    """No tritonserver binary could be found or run."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    title = "tritonserver not found"


class ConfigError(TmsError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    title = "configuration error"


class Unauthenticated(TmsError):
    """The call carries no credential, or one the daemon does not accept."""

    code = grpc.StatusCode.UNAUTHENTICATED
    title = "unauthenticated"


class PermissionDenied(TmsError):
    """The caller is known but may not do this; the message names what was missing."""

    code = grpc.StatusCode.PERMISSION_DENIED
    title = "permission denied"


class QuotaExceeded(TmsError):
    """A tenant's quota refuses the request; the message names the quota."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    title = "quota exceeded"


class TenantNotFound(TmsError):
    code = grpc.StatusCode.NOT_FOUND
    title = "not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"tenant {name!r} not found")


class TokenNotFound(TmsError):
    code = grpc.StatusCode.NOT_FOUND
    title = "not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} not found")
