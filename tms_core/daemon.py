"""`tms daemon`: the lease manager, its gRPC API and its reconciler, in one asyncio process.

Root tasks: the gRPC server (serves people and sidecars) and the reconciler (expiry, idle
servers, dead processes). SIGTERM or SIGINT stops both, then every server this daemon runs,
unless `daemon.leave_serving` is set, in which case a daemon started later adopts them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from tms_core import aiotasks, gctune, metrics
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.api.cluster import cluster_status
from tms_core.api.health import DaemonHealth
from tms_core.api.identity_servicer import IdentityServicer
from tms_core.api.interceptor import ErrorInterceptor
from tms_core.api.servicer import add_servicers, add_sidecar_servicer
from tms_core.backends.local import LocalBackend
from tms_core.clock import Clock, SystemClock
from tms_core.config import Settings
from tms_core.errors import ConfigError
from tms_core.identity import local as local_identity
from tms_core.identity.activator import ensure_activator_token
from tms_core.identity.audit import AuditLog
from tms_core.identity.authority import Authority
from tms_core.identity.sidecar_keys import SidecarKeys
from tms_core.identity.tokens import TokenRegistry
from tms_core.inventory import read_node
from tms_core.manager.facade import LeaseManager
from tms_core.router.wake import WakeListener, socket_name
from tms_core.routing import RouterProcess
from tms_core.store import Store
from tms_core.triton.locate import locate

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005


def _lock_state(state: Path) -> IO[str]:
    state.parent.mkdir(parents=True, exist_ok=True)
    handle = open(state.with_name(state.name + ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"daemon.state: {state} is in use by another tms daemon; stop it or use --state"
        ) from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def _recorded_router(store: Store) -> int | None:
    value = (await store.load_extras()).meta.get("router_pid")
    return int(value) if value and value.isdigit() else None


def _sidecar_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _bind(server: grpc.aio.Server, address: str, key: str, lock: IO[str]) -> str:
    """Listens on `address` in plain text; the host:port bound (port 0: the one chosen)."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        lock.close()
        raise ConfigError(
            f"{key}: cannot listen on {address} (in use by another process, or not a host:port)"
        )
    return f"{address.rpartition(':')[0]}:{port}"


def _add_tls_port(server: grpc.aio.Server, settings: Settings, lock: IO[str]) -> None:
    """The TLS listener, when `daemon.tls_listen` asks for one."""
    daemon = settings.daemon
    if not daemon.tls_listen:
        return
    pem: dict[str, bytes] = {}
    files = [("tls_cert", daemon.tls_cert), ("tls_key", daemon.tls_key)]
    if daemon.tls_client_ca is not None:
        files.append(("tls_client_ca", daemon.tls_client_ca))
    for key, path in files:
        if path is None:
            lock.close()
            raise ConfigError(f"daemon.{key}: daemon.tls_listen needs it (a PEM file)")
        try:
            pem[key] = path.read_bytes()
        except OSError as exc:
            lock.close()
            raise ConfigError(f"daemon.{key}: cannot read {path}: {exc.strerror}") from None
    client_ca = pem.get("tls_client_ca")
    credentials = grpc.ssl_server_credentials(
        [(pem["tls_key"], pem["tls_cert"])],
        root_certificates=client_ca,
        # With an authority for clients, a client without a certificate it signed is turned
        # away in the handshake, before any call.
        require_client_auth=client_ca is not None,
    )
    try:
        port = server.add_secure_port(daemon.tls_listen, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        lock.close()
        raise ConfigError(
            f"daemon.tls_listen: cannot listen on {daemon.tls_listen} with the certificate and "
            "key given (port in use, not a host:port, or a key that does not match)"
        )
    log.info(
        "TLS listener on %s%s",
        daemon.tls_listen,
        ", client certificates required" if client_ca is not None else "",
    )


@dataclass
class _Wiring:
    """A backend and the lease manager driving it, with what the daemon runs around them."""

    manager: LeaseManager
    description: str
    before_recover: Callable[[], Awaitable[None]]
    loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    after_servers_stopped: Callable[[], None] = lambda: None
    # Pods outlive the daemon's own pod: a daemon restarted in the cluster adopts them.
    always_leave_serving: bool = False


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _check_exposure(settings: Settings) -> None:
    """Plain text beyond loopback, or no tokens beyond loopback, only when asked for: loudly."""
    daemon = settings.daemon
    exposed = []
    if not _loopback(daemon.listen):
        exposed.append(f"daemon.listen {daemon.listen} is plain text (no TLS)")
    if not _loopback(daemon.sidecar_listen):
        exposed.append(f"daemon.sidecar_listen {daemon.sidecar_listen} is plain text (no TLS)")
    elif daemon.backend == "kubernetes":
        log.warning(
            "daemon.sidecar_listen %s is loopback: sidecars in pods cannot reach it unless "
            "something forwards kubernetes.daemon_address to it (in a pod: 0.0.0.0:30347)",
            daemon.sidecar_listen,
        )
    if not settings.identity.tokens and (
        not _loopback(daemon.listen) or (daemon.tls_listen and not _loopback(daemon.tls_listen))
    ):
        exposed.append("identity.tokens is off: every caller is an admin")
    if not exposed:
        return
    if not daemon.allow_insecure_listen:
        raise ConfigError(
            f"{'; '.join(exposed)}, beyond loopback: anyone on the network could read tokens "
            "or act as an admin. Listen on 127.0.0.1, use daemon.tls_listen, or set "
            "daemon.allow_insecure_listen: true for a network nobody else can reach"
        )
    for problem in exposed:
        log.warning("INSECURE: %s, beyond loopback (daemon.allow_insecure_listen is set)", problem)


@dataclass
class _Identity:
    registry: TokenRegistry
    sidecars: SidecarKeys
    authority: Authority
    audit: AuditLog
    token_file: Path | None = None
    pointers: list[Path | None] = field(default_factory=list)


async def _identity(settings: Settings, clock: Clock, store: Store, state: Path) -> _Identity:
    async def persist(token: Any) -> None:
        async with store.transaction() as tx:
            await tx.put_token(token)

    async def write_audit(records: Any) -> None:
        async with store.transaction() as tx:
            await tx.add_audit(records, settings.identity.audit_keep)

    registry = TokenRegistry(await store.load_tokens(), clock=clock, persist=persist)
    sidecars = SidecarKeys.in_state_dir(state.parent)
    authority = Authority(registry, sidecars, tokens_required=settings.identity.tokens)
    return _Identity(registry, sidecars, authority, AuditLog(write_audit))


def _state_gauges(manager: LeaseManager) -> Callable[[], dict[str, Any]]:
    """What the metrics' state gauges read at each scrape."""

    def read() -> dict[str, Any]:
        leases = Counter((lease.state.value, lease.tenant) for lease in manager.leases.values())
        servers = Counter(server.state.value for server in manager.servers.values())
        memory: dict[tuple[str, str, str], int] = {}
        for node in cluster_status(manager).nodes:
            devices = [("host", node.cpu)] + [(f"gpu{g.index}", g.memory) for g in node.gpus]
            for device, status in devices:
                key = (node.name, device)
                memory[(*key, "total")] = status.total_bytes
                memory[(*key, "declared")] = status.declared_bytes
                memory[(*key, "measured")] = status.measured_bytes
                memory[(*key, "free")] = max(status.total_bytes - status.declared_bytes, 0)
        return {"leases": leases, "servers": servers, "memory": memory}

    return read


def _local(
    settings: Settings,
    clock: Clock,
    store: Store,
    state: Path,
    sidecar_listen: str,
    sidecars: SidecarKeys,
) -> _Wiring:
    work_dir = settings.local.work_dir or state.parent / "servers"
    wake_name = socket_name(state.parent)
    router = RouterProcess(
        state.parent,
        hold_s=settings.local.router_hold,
        hold_max=settings.local.router_hold_connections,
        wake_socket=wake_name,
        cpu=settings.local.router_cpu,
    )
    install = locate(
        settings.local.tritonserver, settings.local.backend_directory, work_dir=state.parent
    )
    backend = LocalBackend(
        install=install,
        work_dir=work_dir,
        daemon_address=_sidecar_address(sidecar_listen),
        locate_other=lambda binary: locate(binary, None, work_dir=state.parent),
        router=router,
        repositories=settings.repositories,
        cache_dir=settings.repositories.cache_dir or state.parent / "model-cache",
        sidecar_credential=sidecars.credential,
        sidecar_metrics=settings.local.sidecar_metrics,
        wake_hold_s=settings.autoscale.wake_timeout,
        triton_args=settings.servers.triton_args,
        spare_sidecar_log=state.parent / "spare-sidecar.log"
        if settings.local.spare_sidecar
        else None,
    )
    manager = LeaseManager(
        store=store,
        backend=backend,
        clock=clock,
        settings=settings,
        nodes=[
            read_node(
                declared_gpus=settings.local.gpus,
                declared_product=settings.local.gpu_product,
                name=settings.local.node_name,
                labels=settings.local.node_labels,
            )
        ],
    )

    # A process that exits wakes the reconciler: its revival starts at once.
    backend.on_exit = manager.outbox.deadline_moved

    # A connection at a parked lease's address: the router asks, the lease wakes.
    waking: set[int] = set()

    def wake(port: int) -> None:
        if port in waking:
            return  # one wake at a time per address; the router asks every second
        waking.add(port)
        task = aiotasks.create_guarded_task(manager.wake_address(port), name=f"wake :{port}")
        task.add_done_callback(lambda _: waking.discard(port))

    listener = WakeListener(wake_name, wake)

    def stop_router() -> None:
        router.stop()
        listener.close()
        backend.kill_children()

    async def start_router() -> None:
        backend.refill()  # the spare sidecar, so the first server's is warm
        listener.start()
        router_pid = router.ensure_running(await _recorded_router(store))
        async with store.transaction() as tx:
            await tx.set_meta("router_pid", str(router_pid))

    return _Wiring(
        manager,
        f"local backend, tritonserver {install.binary}",
        start_router,
        # With the servers gone there is nothing left to route to.
        after_servers_stopped=stop_router,
    )


async def _kubernetes(
    settings: Settings, clock: Clock, store: Store, identity: _Identity
) -> _Wiring:
    # Imported here: only this backend needs the kubernetes client.
    from tms_core.backends.kubernetes import KubernetesBackend, connect

    api, namespace = connect(settings.kubernetes)
    backend = KubernetesBackend(
        settings.kubernetes,
        api,
        namespace,
        repositories=settings.repositories,
        sidecar_credential=identity.sidecars.credential,
        wake_hold_s=settings.autoscale.wake_timeout,
        triton_args=settings.servers.triton_args,
    )
    manager = LeaseManager(store=store, backend=backend, clock=clock, settings=settings)
    backend.attach(manager.note_reason, manager.set_nodes)

    async def prepare() -> None:
        await backend.prepare()
        # The activator's token: made here, written only into its Secret.
        secret = backend.activator_token
        if not secret.name:
            return
        try:
            await ensure_activator_token(
                identity.registry, secret.read, secret.write, where=f"Secret {secret.name}"
            )
        except OSError as exc:  # the API refused or did not answer
            log.warning("the activator's token: %s; parked leases cannot be woken", exc)

    return _Wiring(
        manager,
        f"kubernetes backend, namespace {namespace}",
        prepare,
        loops={"kubernetes": backend.run},
        always_leave_serving=True,
    )


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs the daemon until `stop` is set or a signal arrives."""
    clock = clock or SystemClock()
    _check_exposure(settings)
    state = settings.daemon.state_path()
    lock = _lock_state(state)
    interceptor = ErrorInterceptor()
    size = settings.daemon.max_message_bytes
    # Deliberately bounded: a request larger than this is refused by gRPC before it is read
    # into memory; each field inside is bounded again by api/bounds.py.
    options = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
    ]
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    # The sidecars' service on its own listener: the API's port does not offer it.
    sidecar_server = grpc.aio.server(interceptors=[interceptor], options=options)
    listen = _bind(server, settings.daemon.listen, "daemon.listen", lock)
    sidecar_listen = _bind(
        sidecar_server, settings.daemon.sidecar_listen, "daemon.sidecar_listen", lock
    )
    _add_tls_port(server, settings, lock)
    store = await Store.open(state)
    try:
        identity = await _identity(settings, clock, store, state)
        if settings.daemon.backend == "kubernetes":
            wiring = await _kubernetes(settings, clock, store, identity)
        else:
            wiring = _local(settings, clock, store, state, sidecar_listen, identity.sidecars)
    except BaseException:
        # Its worker thread would keep the process alive after the error.
        await store.close()
        lock.close()
        raise
    manager = wiring.manager
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    health = DaemonHealth()
    metrics_server = None
    try:
        await wiring.before_recover()
        await manager.recover()
        gctune.tune_gc()
        if settings.identity.local_admin_token:
            identity.token_file = await local_identity.ensure_admin_token(
                identity.registry, state.parent
            )
        if not settings.identity.tokens:
            log.warning("identity.tokens is off: every API caller is an admin")
        interceptor.attach(identity.authority, ownership=manager, audit=identity.audit, clock=clock)
        # The store's writes run in a worker thread: under load the event loop holds the GIL
        # and the default 5 ms switch interval delayed every commit by up to that much.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        add_servicers(server, manager, sidecars=False)
        add_sidecar_servicer(sidecar_server, manager)
        pb_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(manager, identity.registry, identity.audit, store), server
        )
        if settings.daemon.metrics_listen:
            metrics_server = metrics.MetricsServer(_state_gauges(manager))
            await metrics_server.start(settings.daemon.metrics_listen)
        health.add_to(server)
        health.add_to(sidecar_server)
        await sidecar_server.start()
        await server.start()
        await health.serving()
        if identity.token_file is not None:
            for address in (listen, settings.daemon.tls_listen):
                if address:
                    pointer = local_identity.register(address, identity.token_file)
                    identity.pointers.append(pointer)
        log.info(
            "tms daemon listening on %s (sidecars on %s), state %s, %s",
            listen,
            sidecar_listen,
            state,
            wiring.description,
        )
        # Writes the audit log's records in batches.
        tasks.append(aiotasks.create_guarded_task(identity.audit.run(), name="audit"))
        # Expires leases on time and notices dead or idle servers.
        tasks.append(aiotasks.create_guarded_task(manager.reconciler.run(), name="reconciler"))
        for name, loop_of in wiring.loops.items():
            tasks.append(aiotasks.create_guarded_task(loop_of(), name=name))
        if ready is not None:
            ready(listen)
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("root task %s ended; shutting down", task.get_name())
    finally:
        log.info("shutting down")
        await health.stopping()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await aiotasks.stop_tasks(tasks)
        # Sidecars must still reach the daemon while their servers stop, so stop servers
        # before the API.
        leave_serving = settings.daemon.leave_serving or wiring.always_leave_serving
        await manager.shutdown(leave_serving=leave_serving)
        if not leave_serving:
            wiring.after_servers_stopped()
        await server.stop(grace=2.0)
        await sidecar_server.stop(grace=2.0)
        if identity.token_file is not None:
            for pointer in identity.pointers:
                local_identity.unregister(pointer, identity.token_file)
        if metrics_server is not None:
            await metrics_server.close()
        await identity.audit.flush()
        await store.close()
        lock.close()
        log.info("stopped")
