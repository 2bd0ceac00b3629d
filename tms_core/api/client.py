"""The Python client of the daemon's API, used by the CLI, the console and the notebook magics.

Errors come out as `ClientError` with a one-line message fit to show a person.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import grpc

from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.client_tls import ClientTls, TlsFileError, explain_handshake
from tms_core.defaults import DEFAULT_LISTEN
from tms_core.identity.local import local_token
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.units import format_size, parse_size, rfc3339

T = TypeVar("T")

ENDED = (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)


class ClientError(Exception):
    """A failed call, with a message fit to show as it is."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def default_target() -> str:
    return os.environ.get("TMS_TARGET") or DEFAULT_LISTEN


def resolve_token(target: str, token: str | None = None) -> str | None:
    """The API token for `target`: the one given, else `$TMS_TOKEN`, else — for a daemon on
    this machine started by this user — its own admin token (docs/security.md)."""
    return token or os.environ.get("TMS_TOKEN") or local_token(target)


# The name the console's form still uses for `ModelRequest`; the same type.
ModelArg = ModelRequest


def parse_model_arg(text: str) -> ModelRequest:
    """`name=NAME,uri=URI[,memory=2GiB][,sha256=HEX]`; a URI without a scheme is a local
    path."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{text!r}: expected name=NAME,uri=URI[,memory=SIZE]")
        if key not in ("name", "uri", "memory", "sha256"):
            raise ValueError(f"{text!r}: unknown key {key!r}; expected name, uri, memory or sha256")
        if key in fields:
            raise ValueError(f"{text!r}: {key!r} given twice")
        fields[key] = value.strip()
    for required in ("name", "uri"):
        if not fields.get(required):
            raise ValueError(f"{text!r}: {required}= is missing")
    uri = fields["uri"]
    if not urlparse(uri).scheme:
        # The daemon runs elsewhere and in another directory: send what the user meant.
        uri = Path(uri).expanduser().resolve().as_uri()
    memory = 0
    if "memory" in fields:
        try:
            memory = parse_size(fields["memory"])
        except ValueError as exc:
            raise ValueError(f"memory: {exc}") from None
    return ModelRequest(fields["name"], uri, memory, fields.get("sha256", ""))


def state_name(state: int) -> str:
    return pb.LeaseState.Name(state).removeprefix("LEASE_")


def model_state_name(state: int) -> str:
    return pb.ModelState.Name(state).removeprefix("MODEL_")


def download_progress(model: pb.ModelStatus) -> str:
    """`1.5 MiB / 3.0 MiB (50%)` while the model downloads; "" otherwise."""
    if model.state != pb.MODEL_FETCHING or not (model.bytes_done or model.bytes_total):
        return ""
    if not model.bytes_total:
        return f"{format_size(model.bytes_done)}"
    percent = 100 * model.bytes_done // model.bytes_total
    return f"{format_size(model.bytes_done)} / {format_size(model.bytes_total)} ({percent}%)"


def lease_to_dict(lease: pb.Lease) -> dict[str, Any]:
    """The documented JSON shape of a lease (`-o json`, see docs/cli.md)."""
    return {
        "id": lease.id,
        "name": lease.name,
        "state": state_name(lease.state),
        "reason": lease.reason,
        "endpoints": {
            "http": lease.endpoints.http,
            "grpc": lease.endpoints.grpc,
            "metrics": lease.endpoints.metrics,
        },
        "models": [
            {
                "name": m.name,
                "uri": m.uri,
                "memory_bytes": m.memory_bytes,
                "state": model_state_name(m.state),
                "error": m.error,
                "load_s": round(m.load_s, 3),
                "bytes_done": m.bytes_done,
                "bytes_total": m.bytes_total,
            }
            for m in lease.models
        ],
        "server": lease.server_id,
        "servers": [
            {"id": s.server_id, "http": s.http, "grpc": s.grpc, "metrics": s.metrics}
            for s in lease.endpoints.servers
        ],
        "duration_s": lease.duration_s,
        "activity_window_s": lease.activity_window_s,
        "last_activity_at": rfc3339(lease.last_activity_at) if lease.last_activity_at else "",
        "pool": lease.pool,
        "quota": lease.quota,
        "tritonserver": lease.tritonserver,
        "created_at": rfc3339(lease.created_at),
        "expires_at": rfc3339(lease.expires_at),
        # 0 only for a parked lease; older daemons never set it (one replica).
        "replicas_wanted": lease.replicas_wanted
        if lease.replicas_wanted or lease.state == pb.LEASE_PARKED
        else 1,
        "parked_at": rfc3339(lease.parked_at) if lease.parked_at else "",
        "woke_at": rfc3339(lease.woke_at) if lease.woke_at else "",
        "wake_s": lease.wake_s,
        "replicas": [
            {
                "id": r.id,
                "server": r.server_id,
                "state": state_name(r.state),
                "reason": r.reason,
                "node": r.node,
                "draining": r.draining,
                "http": r.http,
                "grpc": r.grpc,
            }
            for r in lease.replicas
        ],
    }


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc ships no annotations
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc ships no annotations
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds `authorization: Bearer TOKEN` to every call (the daemon checks it on each).

    `token` is called on each call: the local daemon's token is found once it has started
    (a client may be made before its daemon is up), and is found again after a restart."""

    def __init__(self, token: Callable[[], str | None], opening: threading.Lock) -> None:
        self._token = token
        # Held while a call starts and while the channel closes: a call started on a channel
        # being closed by another thread (the console's feed reconnecting) crashes grpc.
        self._opening = opening
        self.closed = False

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        token = self._token()
        metadata = [*(details.metadata or ())]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        # A stream's call is started here and returns at once: hold the lock over its start.
        with self._opening:
            if self.closed:
                raise ClientError("the client was closed")
            return continuation(self._details(details), request)


def _channel(target: str, tls: ClientTls) -> grpc.Channel:
    """A plain channel to `host:port`; TLS to `https://host:port`, trusting `tls.ca` (else the
    system's authorities) and presenting `tls.cert` when given."""
    if not target.startswith("https://"):
        return grpc.insecure_channel(target)
    try:
        credentials = tls.credentials()
    except TlsFileError as exc:
        raise ClientError(str(exc)) from None
    return grpc.secure_channel(target.removeprefix("https://").rstrip("/"), credentials)


class TmsClient:
    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        """`ca_file`, `cert_file` and `key_file` (else `TMS_CA_FILE`, `TMS_CERT_FILE`,
        `TMS_KEY_FILE`) matter for `https://` targets only: the authority the daemon's
        certificate must chain to, and this client's certificate for mutual TLS."""
        self.target = target or default_target()
        self._timeout = timeout
        self.tls = ClientTls.resolve(ca_file, cert_file, key_file)
        self._channel = _channel(self.target, self.tls)
        given = token or os.environ.get("TMS_TOKEN")
        target = self.target

        def current_token() -> str | None:
            return given or local_token(target)

        self._opening = threading.Lock()
        self._bearer = _BearerToken(current_token, self._opening)
        self._channel = grpc.intercept_channel(self._channel, self._bearer)
        self._stub = pb_grpc.LeaseServiceStub(self._channel)
        self._names = pb_grpc.LeaseNameServiceStub(self._channel)
        self._pools = pb_grpc.PoolServiceStub(self._channel)
        self._allowlist = pb_grpc.AllowlistServiceStub(self._channel)
        self._events = pb_grpc.EventServiceStub(self._channel)
        self._cluster = pb_grpc.ClusterServiceStub(self._channel)
        self._identity = pb_grpc.IdentityServiceStub(self._channel)

    def close(self) -> None:
        with self._opening:
            self._bearer.closed = True
            self._channel.close()

    def __enter__(self) -> TmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError) -> ClientError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE and self.target.startswith("https://"):
            explained = explain_handshake(self.target, exc.details() or "", self.tls)
            if explained is not None:
                return ClientError(explained, code)
        if code == grpc.StatusCode.UNAVAILABLE:
            return ClientError(
                f"daemon unreachable at {self.target} (is `tms daemon` running? "
                "set --target, TMS_TARGET or `tms target set`)",
                code,
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(f"daemon at {self.target} did not answer in time", code)
        return ClientError(exc.details() or code.name, code)

    def acquire(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> Generator[pb.Lease, None, None]:
        """The new lease, once now and again on each change until READY or FAILED.

        `options` (None: every default) are described on `LeaseOptions`, docs/placement.md
        and docs/leases.md."""
        # Imported here: the conversion reads the domain models, which short commands
        # (`tms lease list`) do without.
        from tms_core.api.convert import acquire_request_to_pb

        stream = self._stub.Acquire(acquire_request_to_pb(models, options))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            stream.cancel()

    def plan(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> pb.PlanResponse:
        """Where `acquire` with the same arguments would put the lease now, and why."""
        from tms_core.api.convert import acquire_request_to_pb

        return self._call(self._stub.Plan, acquire_request_to_pb(models, options))

    def cluster(self) -> pb.ClusterStatus:
        return self._call(self._cluster.Cluster, pb.Empty())

    def models(self) -> pb.ModelsStatus:
        return self._call(self._cluster.Models, pb.Empty())

    def follow(self, lease_id: str) -> Generator[pb.Lease, None, None]:
        stream = self._stub.Follow(pb.LeaseRef(id=lease_id))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            stream.cancel()

    def status(self, lease_id: str) -> pb.Lease:
        try:
            return self._stub.Status(pb.LeaseRef(id=lease_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def list_leases(self, *, include_ended: bool = False) -> list[pb.Lease]:
        try:
            response = self._stub.List(
                pb.ListRequest(include_ended=include_ended), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return list(response.leases)

    def renew(self, lease_id: str, duration_s: float = 0.0) -> pb.Lease:
        try:
            return self._stub.Renew(
                pb.RenewRequest(id=lease_id, duration_s=duration_s), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def wake(self, lease_id: str, *, wait: bool = True) -> pb.Lease:
        """Wakes a PARKED lease (an id or a lease name); with `wait`, returns once it is
        READY, or PARKED again when the wake failed (`reason` says why)."""
        try:
            lease = self._stub.Wake(pb.LeaseRef(id=lease_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        if wait and lease.state in (pb.LEASE_PENDING, pb.LEASE_LOADING):
            for current in self.follow(lease.id):
                lease = current
                if lease.state not in (pb.LEASE_PENDING, pb.LEASE_LOADING):
                    break
        return lease

    def scale(self, lease_id: str, replicas: int) -> pb.Lease:
        """Sets how many replicas an autoscaling lease has now (0 parks one whose MIN is 0)."""
        try:
            return self._stub.Scale(
                pb.ScaleRequest(id=lease_id, replicas=replicas), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def release(self, lease_id: str, *, wait: bool = True) -> pb.Lease:
        """Releases the lease (an id or a lease name); with `wait`, returns once its models
        are unloaded."""
        try:
            lease = self._stub.Release(pb.LeaseRef(id=lease_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        if wait and lease.state not in ENDED:
            # Followed by id: a name may move to another lease meanwhile.
            lease_id = lease.id
            for lease in self.follow(lease_id):  # noqa: B007 - the last one is returned
                pass
        return lease

    def wait_until_ready(self, lease_id: str) -> pb.Lease:
        for lease in self.follow(lease_id):
            if lease.state == pb.LEASE_READY or lease.state in ENDED:
                return lease
        return self.status(lease_id)

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # Lease names

    def set_name(self, name: str, lease_id: str) -> pb.LeaseName:
        """Creates `name` or re-points it at the lease (the switch happens once it is READY)."""
        return self._call(self._names.SetName, pb.NameRequest(name=name, lease_id=lease_id))

    def delete_name(self, name: str) -> pb.LeaseName:
        return self._call(self._names.DeleteName, pb.NameRequest(name=name))

    def list_names(self) -> list[pb.LeaseName]:
        return list(self._call(self._names.ListNames, pb.Empty()).names)

    # Pools

    def create_pool(
        self,
        name: str,
        *,
        quota_per_server: int,
        max_servers: int,
        min_servers: int = 0,
        server_memory_bytes: int = 0,
        tritonserver: str = "",
    ) -> pb.Pool:
        request = pb.Pool(
            name=name,
            quota_per_server=quota_per_server,
            max_servers=max_servers,
            min_servers=min_servers,
            server_memory_bytes=server_memory_bytes,
            tritonserver=tritonserver,
        )
        return self._call(self._pools.CreatePool, request)

    def delete_pool(self, name: str) -> pb.Pool:
        return self._call(self._pools.DeletePool, pb.PoolRef(name=name))

    def list_pools(self) -> list[pb.Pool]:
        return list(self._call(self._pools.ListPools, pb.Empty()).pools)

    def pool_status(self, name: str) -> pb.Pool:
        return self._call(self._pools.PoolStatus, pb.PoolRef(name=name))

    # The Triton allowlist

    def allowlist_add(self, tritonserver: str) -> list[str]:
        entry = pb.AllowlistEntry(tritonserver=tritonserver)
        return list(self._call(self._allowlist.AllowlistAdd, entry).tritonservers)

    def allowlist_remove(self, tritonserver: str) -> list[str]:
        entry = pb.AllowlistEntry(tritonserver=tritonserver)
        return list(self._call(self._allowlist.AllowlistRemove, entry).tritonservers)

    def allowlist(self) -> list[str]:
        return list(self._call(self._allowlist.AllowlistList, pb.Empty()).tritonservers)

    # Identity: tokens, tenants, the audit log

    def create_token(
        self, name: str, role: str, *, tenant: str = "", expires_in_s: float = 0.0
    ) -> pb.ApiToken:
        """A new token; its `secret` is in this answer only."""
        request = pb.TokenRequest(name=name, role=role, tenant=tenant, expires_in_s=expires_in_s)
        return self._call(self._identity.CreateToken, request)

    def list_tokens(self) -> list[pb.ApiToken]:
        return list(self._call(self._identity.ListTokens, pb.Empty()).tokens)

    def revoke_token(self, name: str) -> pb.ApiToken:
        return self._call(self._identity.RevokeToken, pb.TokenRef(name=name))

    def put_tenant(self, tenant: pb.Tenant) -> pb.Tenant:
        return self._call(self._identity.PutTenant, tenant)

    def list_tenants(self) -> list[pb.Tenant]:
        return list(self._call(self._identity.ListTenants, pb.Empty()).tenants)

    def tenant_status(self, name: str) -> pb.Tenant:
        return self._call(self._identity.TenantStatus, pb.TenantRef(name=name))

    def audit(
        self, *, since: float = 0.0, tenant: str | None = None, limit: int = 0
    ) -> list[pb.AuditEntry]:
        request = pb.AuditRequest(since=since, limit=limit)
        if tenant is not None:
            request.tenant = tenant
        return list(self._call(self._identity.Audit, request).entries)

    def whoami(self) -> pb.WhoAmIResponse:
        return self._call(self._identity.WhoAmI, pb.Empty())

    # Events

    def watch(
        self, *, since_seq: int = 0, replay: bool = True, follow: bool = True
    ) -> Generator[pb.Event, None, None]:
        """Every lease, model, server, name and pool change, as it happens; without
        `follow`, only the kept events (after `since_seq`), then the stream ends."""
        stream = self._events.Watch(
            pb.WatchRequest(since_seq=since_seq, replay=replay, until_caught_up=not follow)
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise self._error(exc) from None
        finally:
            stream.cancel()


def event_to_dict(event: pb.Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": rfc3339(event.at),
        "kind": event.kind,
        "id": event.id,
        "state": event.state,
        "reason": event.reason,
        "lease_id": event.lease_id,
        "server_id": event.server_id,
        "bytes_done": event.bytes_done,
        "bytes_total": event.bytes_total,
    }


def name_to_dict(record: pb.LeaseName) -> dict[str, Any]:
    return {
        "name": record.name,
        "lease_id": record.lease_id,
        "next_lease_id": record.next_lease_id,
        "endpoints": {"http": record.endpoints.http, "grpc": record.endpoints.grpc},
    }


def pool_to_dict(pool: pb.Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "tritonserver": pool.tritonserver,
        "server_memory_bytes": pool.server_memory_bytes,
        "min_servers": pool.min_servers,
        "max_servers": pool.max_servers,
        "quota_per_server": pool.quota_per_server,
        "servers": [
            {
                "id": s.server_id,
                "state": s.state,
                "quota_used": s.quota_used,
                "quota_free": s.quota_free,
                "leases": list(s.lease_ids),
                "http": s.http,
            }
            for s in pool.servers
        ],
    }
