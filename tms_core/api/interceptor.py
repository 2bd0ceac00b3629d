"""The one place every call passes: who is calling, whether they may, what it did.

For each call the interceptor
- authenticates the caller (an API token, or a sidecar's credential) from its `authorization`
  metadata: no token is UNAUTHENTICATED;
- checks the method against the role (`identity.policy`), a user's call against the tenant
  owning the lease or name it touches, and a sidecar's call against its own server: a
  refusal is PERMISSION_DENIED naming what was missing;
- bounds the size of every field of the request (`api.bounds`);
- maps domain errors to gRPC status codes: servicers raise `TmsError`s and never abort
  themselves; anything else is a bug, logged here with its traceback and reported to the
  caller as INTERNAL without crashing the daemon;
- records state-changing and refused calls in the audit log, and every call in the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from tms_core import metrics
from tms_core.api import bounds
from tms_core.clock import Clock
from tms_core.domain import AuditRecord
from tms_core.errors import TmsError
from tms_core.identity import policy
from tms_core.identity.audit import AuditLog
from tms_core.identity.authority import Authority
from tms_core.identity.principal import Principal, Role, set_current
from tms_core.identity.principal import _current as _principal_var

log = logging.getLogger(__name__)


class Ownership(Protocol):
    """Which tenant owns what a call touches (None: no such thing; the servicer says so)."""

    def tenant_of(self, lease_id: str) -> str | None: ...
    def tenant_of_name(self, name: str) -> str | None: ...


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    if isinstance(exc, TmsError):
        await context.abort(exc.code, exc.message)
    log.exception("unexpected error in %s", context)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def _code(exc: BaseException | None, *, answered: bool = False) -> str:
    if exc is None:
        return "OK"
    if answered and not isinstance(exc, Exception):
        # The caller stopped reading a stream after its answer (Acquire's lease, say):
        # what the call does was done.
        return "OK"
    if isinstance(exc, TmsError):
        return str(exc.code.name)
    if isinstance(exc, Exception):
        return "INTERNAL"
    return "CANCELLED"


def _target(message: Any) -> str:
    for field in ("id", "lease_id", "name", "server_id", "tritonserver"):
        value = getattr(message, field, "")
        if isinstance(value, str) and value:
            return value[:200]
    return ""


class _Call:
    """One call as it passes: its principal, outcome and what to record."""

    __slots__ = ("answered", "method", "principal", "rule", "started", "target")

    def __init__(self, method: str, rule: policy.Rule) -> None:
        self.method = method
        self.rule = rule
        self.principal: Principal | None = None
        self.started = time.perf_counter()
        self.target = ""
        self.answered = False


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authentication, authorisation, error mapping, audit and metrics (see the module).

    Without an `authority` (unit tests of servicers), nothing is checked."""

    def __init__(
        self,
        authority: Authority | None = None,
        *,
        ownership: Ownership | None = None,
        audit: AuditLog | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.attach(authority, ownership=ownership, audit=audit, clock=clock)

    def attach(
        self,
        authority: Authority | None,
        *,
        ownership: Ownership | None = None,
        audit: AuditLog | None = None,
        clock: Clock | None = None,
    ) -> None:
        """What the checks need, once the daemon has it (before the server starts)."""
        self._authority = authority
        self._ownership = ownership
        self._audit = audit
        self._clock = clock

    # ------------------------------------------------------------------ checks

    def _admit(self, call: _Call, metadata: Any, request: Any) -> Principal:
        call.target = _target(request)
        if self._authority is None:
            call.principal = Principal("unchecked", Role.ADMIN)
            bounds.check(request)
            return call.principal
        principal = self._authority.authenticate(metadata)
        call.principal = principal
        policy.authorize(principal, call.method, call.rule)
        # Sizes after who may call (a stranger learns nothing of the limits), before anything
        # the request names is looked up.
        bounds.check(request)
        if call.rule.access is policy.Access.SIDECAR:
            policy.authorize_server(principal, call.method, request.server_id)
        if principal.role is Role.USER and call.rule.owned is not None:
            self._check_owner(principal, call.method, call.rule.owned, request)
        return principal

    def _check_owner(
        self, principal: Principal, method: str, owned: policy.Owned, request: Any
    ) -> None:
        lookup = self._ownership
        if lookup is None:
            return
        touched: list[tuple[str, str | None]] = []
        if owned is policy.Owned.LEASE_ID:
            touched.append((f"lease {request.id!r}", lookup.tenant_of(request.id)))
        else:
            touched.append((f"lease name {request.name!r}", lookup.tenant_of_name(request.name)))
            if owned is policy.Owned.LEASE_ID_OF_NAME:
                lease = request.lease_id
                touched.append((f"lease {lease!r}", lookup.tenant_of(lease)))
        for what, tenant in touched:
            if tenant is not None:
                policy.authorize_tenant(principal, method, what, tenant)

    def _finish(self, call: _Call, exc: BaseException | None, *, unary: bool) -> None:
        code = _code(exc, answered=call.answered)
        name = policy.short(call.method)
        metrics.API_REQUESTS.labels(name, code).inc()
        if unary:
            metrics.API_LATENCY.labels(name).observe(time.perf_counter() - call.started)
        refused = code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        if self._audit is None or not (call.rule.changes_state or refused):
            return
        principal = call.principal
        detail = exc.message if isinstance(exc, TmsError) else ""
        self._audit.record(
            AuditRecord(
                at=self._clock.now() if self._clock else time.time(),
                who=principal.name if principal else "anonymous",
                role=principal.role.value if principal else "",
                tenant=principal.tenant if principal else "",
                method=name,
                target=call.target,
                outcome=code,
                detail=detail[:500],
            )
        )

    # ------------------------------------------------------------------ wrapping

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rule = policy.rule_for(method)
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                call = _Call(method, rule)
                failure: BaseException | None = None
                reset = None
                try:
                    reset = set_current(self._admit(call, metadata, request))
                    return await inner_uu(request, context)
                except Exception as exc:
                    failure = exc
                    await _abort(context, exc)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    if reset is not None:
                        _principal_var.reset(reset)
                    self._finish(call, failure, unary=True)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                call = _Call(method, rule)
                failure: BaseException | None = None
                open_streams = metrics.STREAMS.labels(policy.short(method))
                open_streams.inc()
                try:
                    set_current(self._admit(call, metadata, request))
                    async for item in inner_us(request, context):
                        if not call.target:
                            call.target = _target(item)
                        call.answered = True
                        yield item
                except Exception as exc:
                    failure = exc
                    await _abort(context, exc)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    open_streams.dec()
                    self._finish(call, failure, unary=False)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
