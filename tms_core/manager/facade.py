"""`LeaseManager`: the facade the API calls, assembling the manager's parts.

States: PENDING → LOADING → READY → RELEASING → RELEASED, and EXPIRED or FAILED (with a
reason); a lease that may park goes READY → PARKED → PENDING (woken) and on (`parking`).
Each call takes the one lock, changes memory through the ledger inside a change,
which commits it to the store before anyone hears of it, then lets the parts act: placement
(`placing`), servers (`lifecycle`), sidecar reports (`settle`), consolidation (`moves`) and
time (`reconciler`). See docs/architecture.md for how they fit.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

from tms_core import metrics, placement
from tms_core.backends.base import Backend
from tms_core.clock import Clock
from tms_core.config import Settings
from tms_core.domain import (
    Assignment,
    Lease,
    LeaseNameRecord,
    LeaseState,
    NodeCache,
    Pool,
    ServedModel,
    Server,
    ServerState,
    copy_lease,
)
from tms_core.errors import (
    CapacityExceeded,
    InvalidArgument,
    LeaseEnded,
    LeaseNotFound,
    NameNotFound,
    QuotaExceeded,
)
from tms_core.events import EventLog
from tms_core.ids import LeaseId, ModelName, ServerId, new_lease_id
from tms_core.inventory import Node
from tms_core.lease_request import LeaseOptions, ModelRequest
from tms_core.manager import requests
from tms_core.manager.autoscaler import Autoscaler
from tms_core.manager.catalog import Catalog
from tms_core.manager.index import counts_down
from tms_core.manager.ledger import Ledger
from tms_core.manager.lifecycle import ServerLifecycle
from tms_core.manager.moves import Consolidator
from tms_core.manager.outbox import Outbox
from tms_core.manager.parking import Parking
from tms_core.manager.placing import Placer
from tms_core.manager.probe import Probe
from tms_core.manager.reconciler import Reconciler
from tms_core.manager.renewals import RenewalWriter
from tms_core.manager.replicas import Replicas
from tms_core.manager.scaling_calls import ScalingCalls
from tms_core.manager.settle import Settler
from tms_core.manager.standby import Standby
from tms_core.manager.tenants import QUOTA_WAIT
from tms_core.manager.views import FleetViews
from tms_core.store.protocol import StateStore

log = logging.getLogger(__name__)


def _decision_name(decision: placement.Decision, over_quota: str | None) -> str:
    if over_quota is not None:
        return "quota"
    return {
        placement.JoinServer: "join",
        placement.StartServer: "start",
        placement.Wait: "wait",
    }.get(type(decision), "reject")


class LeaseManager(Catalog, ScalingCalls):
    def __init__(
        self,
        *,
        store: StateStore,
        backend: Backend,
        clock: Clock,
        settings: Settings,
        nodes: Sequence[Node] = (),
        events: EventLog | None = None,
        probe: Probe | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self.node_caches: dict[str, NodeCache] = {}
        """Each node's model cache, as the latest report from a sidecar there read it."""
        self._settings = settings
        self._lock = asyncio.Lock()
        self.events = events or EventLog(clock)
        self.outbox = Outbox(
            self.events, publish=self._publish, assignment_changed=backend.assignment_changed
        )
        self.ledger = Ledger(
            store=store, backend=backend, clock=clock, outbox=self.outbox, nodes=nodes
        )
        self.views = FleetViews(self.ledger, settings, probe)
        self.settler = Settler(self.ledger, self.views)
        self.renewals = RenewalWriter(store, self._renewals_written)
        self.lifecycle = ServerLifecycle(self.ledger, backend, self.views, settings, self._lock)
        self.placer = Placer(self.ledger, self.views, self.lifecycle, self.settler, settings)
        self.consolidator = Consolidator(self.ledger, self.views, self.settler, settings, probe)
        self.replicas = Replicas(self.ledger, self.views, self.placer, settings)
        self.autoscaler = Autoscaler(
            self.ledger, self.replicas, settings, hpa=backend.hpa_autoscaling
        )
        self.parking = Parking(self.ledger, self.views, self.placer, self.replicas, settings)
        for triton in settings.servers.standby_tritons:
            try:
                backend.check_tritonserver(triton)
            except InvalidArgument as exc:
                raise InvalidArgument(f"servers.standby_tritons[{triton!r}]", str(exc)) from None
        self.standby = Standby(
            self.ledger,
            self.views,
            self.lifecycle,
            settings,
            binary=backend.default_tritonserver,
        )
        self.reconciler = Reconciler(
            ledger=self.ledger,
            standby=self.standby,
            autoscaler=self.autoscaler,
            replicas=self.replicas,
            parking=self.parking,
            lifecycle=self.lifecycle,
            settler=self.settler,
            placer=self.placer,
            consolidator=self.consolidator,
            settings=settings,
            clock=clock,
            lock=self._lock,
        )

    def sidecar_triton(self, server_id: str) -> str:
        """Where a server's sidecar is to find its Triton, for servers this daemon restarts
        itself (a crashed one comes back on new ports); "" where the sidecar knows better
        (a pod's Triton is beside it, whatever its Service is called)."""
        server = self.ledger.servers.get(ServerId(server_id))
        if server is None or not self._backend.revives_servers:
            return ""
        return server.grpc_endpoint

    def _publish(self) -> None:
        self._backend.publish(self.ledger.published())

    # ------------------------------------------------------------------ reading

    @property
    def leases(self) -> Mapping[LeaseId, Lease]:
        """Every lease, ended ones too (read-only for callers)."""
        return self.ledger.leases

    @property
    def servers(self) -> Mapping[ServerId, Server]:
        """The live servers (read-only for callers)."""
        return self.ledger.servers

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.ledger.nodes

    @property
    def measured(self) -> Mapping[tuple[str, str], int]:
        return self.ledger.measured

    @property
    def pools(self) -> Mapping[str, Pool]:
        return self.ledger.pools.pools

    @property
    def allowlist(self) -> list[str]:
        return list(self.ledger.pools.allowlist)

    @property
    def default_tritonserver(self) -> str:
        return self._backend.default_tritonserver

    @property
    def deadlines_changed(self) -> asyncio.Event:
        return self.outbox.deadlines_changed

    def snapshot(self, lease_id: str) -> Lease:
        return copy_lease(self._get(lease_id))

    def list_leases(self, *, include_ended: bool = False) -> list[Lease]:
        return [
            copy_lease(lease)
            for lease in self.ledger.leases.values()
            if (include_ended or not lease.state.ended) and lease.replica_of is None
        ]

    def replicas_of(self, lease: Lease) -> list[tuple[Lease, Server | None]]:
        """The lease's replicas with their servers: itself first, then its live replica
        records, oldest first (read-only for callers)."""
        records = self.ledger.index.replicas_of(lease.id)
        return [(held, self.server_of(held)) for held in (lease, *records)]

    def fleet(self) -> placement.FleetIndex:
        """The fleet as placement sees it now (read-only for callers)."""
        return self.views.fleet()

    def has_live_leases(self) -> bool:
        return bool(self.ledger.index.live)

    def live_count(self) -> int:
        return len(self.ledger.index.live)

    def leases_on(self, server_id: str) -> list[Lease]:
        """The live leases a server holds (read-only for callers), from the per-server index."""
        return self.ledger.leases_on(ServerId(server_id))

    def server_of(self, lease: Lease) -> Server | None:
        return self.ledger.servers.get(lease.server_id) if lease.server_id else None

    def service_host(self, key: str) -> str:
        return self._backend.service_host(key)

    def names_of(self, lease_id: str) -> list[str]:
        """Names that point at the lease, or will once it is READY."""
        return self.ledger.names.names_of(lease_id)

    def list_names(self) -> list[LeaseNameRecord]:
        return [copy.deepcopy(r) for r in sorted(self.ledger.names, key=lambda r: r.name)]

    @property
    def moves_done(self) -> int:
        return self.consolidator.moves_done

    @property
    def move_reloads(self) -> int:
        return self.consolidator.move_reloads

    def _get(self, ref: str) -> Lease:
        """The lease `ref` addresses: a lease id, or a lease name (the lease it points at,
        else the one it will point at once READY). Names that look like ids are refused
        (`requests.check_lease_name`), so the two never collide."""
        lease = self.ledger.leases.get(LeaseId(ref))
        if lease is None:
            record = self.ledger.names.get(ref)
            target = (record.lease_id or record.next_lease_id) if record else None
            lease = self.ledger.leases.get(target) if target else None
        if lease is None:
            raise LeaseNotFound(ref)
        if lease.replica_of is not None:
            # A replica record stands for its lease (its id shows in events and `tms cluster`).
            return self._get(lease.replica_of)
        return lease

    def resolve(self, ref: str) -> LeaseId:
        """The id of the lease a lease id or name addresses now."""
        return self._get(ref).id

    # ------------------------------------------------------------------ start-up

    async def recover(self) -> None:
        """Loads the state and makes it true again after a restart (or a crash).

        A lease keeps its state where its server still runs: one caught LOADING loads on
        (its duration counts from READY), one caught READY serves on. The expiry rule is the
        reconciler's (`counts_down`): only leases whose expiry runs expire here.
        """
        ledger = self.ledger
        servers = await ledger.load_stored()
        now = self._clock.now()
        async with self._lock, ledger.change():
            default = self._backend.default_tritonserver
            if not ledger.pools.allowlist and default:
                # The allowlist starts with the configured Triton, as TMS's did.
                ledger.pools.allowlist.append(default)
                ledger.change_open.allowlist[default] = now
            await self.lifecycle.recover(servers)
            for lease in list(ledger.index.live.values()):
                held = lease.server_id in ledger.servers
                if lease.state is LeaseState.RELEASING and not held:
                    ledger.set_state(lease, LeaseState.RELEASED, "", now)
                elif counts_down(lease) and lease.expires_at <= now:
                    ledger.set_state(
                        lease, LeaseState.EXPIRED, "expired while the daemon was down", now
                    )
                elif lease.state.holds_models and not held:
                    ledger.unplace(lease, "its server was gone when the daemon started", now)
            ledger.change_open.publish = True
        async with self._lock:
            await self.placer.place_pending()
        self.outbox.deadline_moved()

    async def set_nodes(self, nodes: Sequence[Node]) -> None:
        """Replaces the nodes placement may use (a cluster backend calls this as its nodes
        come and go). Servers on a node no longer listed keep their leases but take no new
        ones; leases that wait are placed again, as the new nodes may have room."""
        async with self._lock:
            self.ledger.set_nodes(nodes)
            await self.placer.place_pending()
        self.outbox.deadline_moved()

    async def shutdown(self, *, leave_serving: bool) -> None:
        await self.renewals.close()
        if not leave_serving:
            await self.lifecycle.shutdown()

    # ------------------------------------------------------------------ leases

    def _new_lease(
        self, models: Sequence[ModelRequest], options: LeaseOptions, *, allocate: bool
    ) -> Lease:
        """A validated lease, not yet placed or stored."""
        models = requests.check_models(models)
        if options.name:
            requests.check_lease_name("name", options.name)
        requests.duration(options.duration_s, "duration", self._settings)
        binary = self.ledger.pools.binary_for(options, self._backend.default_tritonserver)
        hpa = self._backend.hpa_autoscaling
        if options.autoscale is not None:
            self._backend.check_autoscale()
        frameworks = [
            self._backend.check_model(f"models[{i}]", model.name, model.uri) or ""
            for i, model in enumerate(models)
        ]
        ports = self._backend.allocate_ports(2) if allocate else [0, 0]
        return requests.build_lease(
            new_lease_id(),
            models,
            options,
            requests.Resolved(binary, frameworks, (ports[0], ports[1]), hpa),
            nodes=self.ledger.nodes,
            settings=self._settings,
            now=self._clock.now(),
        )

    async def acquire(
        self,
        models: Sequence[ModelRequest],
        options: LeaseOptions | None = None,
        *,
        tenant: str = "",
    ) -> Lease:
        """Creates and places a lease: READY at once if it joins a server holding its
        models, LOADING on a server, or PENDING with the reason it waits. It counts against
        `tenant`'s quota (checked and taken under the lock, in the change that records it)."""
        lease = self._new_lease(models, options or LeaseOptions(), allocate=True)
        # Every model exists and is readable, or the lease is refused now, naming it (checked
        # outside the lock: a store's answer takes a network round trip).
        await asyncio.gather(
            *(
                self._backend.check_present(f"models[{i}]", m.name, m.uri)
                for i, m in enumerate(lease.models)
            )
        )
        lease.tenant = tenant
        now = lease.created_at
        ledger = self.ledger
        async with self._lock:
            # Nothing changes state without this lock, so the quota cannot move between
            # this check and the change below that records the lease.
            over = ledger.tenants.over(lease, ledger.index.live.values())
            decision: placement.Decision
            if over is not None:
                if ledger.tenants.tenants[tenant].over_quota != "wait":
                    metrics.DECISIONS.labels("quota").inc()
                    raise QuotaExceeded(over)
                decision = placement.Wait(QUOTA_WAIT + over)
                ledger.tenants.waiting.add(lease.id)
            else:
                started = time.perf_counter()
                decision = self.views.decide(lease)
                metrics.DECISION_LATENCY.observe(time.perf_counter() - started)
            metrics.DECISIONS.labels(_decision_name(decision, over)).inc()
            if isinstance(decision, placement.Reject):
                raise CapacityExceeded(decision.reason)
            if isinstance(decision, placement.Wait) and over is None:
                decision = await self.placer.preempt(lease) or decision
            async with ledger.change():
                ledger.add_lease(lease)
                ledger.set_state(lease, LeaseState.PENDING, "", now)
                if lease.name:
                    ledger.point_name(lease.name, lease, now)
                new_server = self.placer.commit(lease, decision)
            await self.placer.act(lease, new_server)
            if lease.replicas_wanted > 1:
                # Its other replicas are placed now, loading beside it.
                await self.replicas.reconcile([lease.id])
        self.outbox.deadline_moved()
        log.info("lease %s acquired: %s", lease.id, lease.state)
        return self.snapshot(lease.id)

    async def plan(
        self, models: Sequence[ModelRequest], options: LeaseOptions | None = None
    ) -> placement.Decision:
        """What `acquire` would decide now, and why, changing nothing (`--dry-run`)."""
        lease = self._new_lease(models, options or LeaseOptions(), allocate=False)
        async with self._lock:
            return self.views.decide(lease)

    async def renew(self, lease_id: str, duration_s: float = 0.0) -> Lease:
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                raise LeaseEnded(f"lease {lease.id} is {lease.state.value} and cannot be renewed")
            duration = requests.duration(duration_s or lease.duration_s, "duration", self._settings)
            now = self._clock.now()
            # Only the expiry moves, forward: written in a group commit with the renewals
            # that arrive meanwhile, without holding the lock (manager/renewals.py).
            lease.expires_at = max(lease.expires_at, now + duration)
            lease.updated_at = now
            written = self.renewals.queue(lease)
        await written
        return self.snapshot(lease.id)

    async def _renewals_written(self, lease_ids: list[LeaseId]) -> None:
        """Announces a committed group of renewals: RENEWED events, followers woken."""
        async with self._lock:
            now = self._clock.now()
            for lease_id in lease_ids:
                lease = self.ledger.leases.get(lease_id)
                if lease is None or lease.state.ended:
                    continue
                self.settler.announce_renewal(lease, "renewed", now)
                self.ledger.notify(lease)
            # No "a deadline moved" for the reconciler: a renewal only moves an expiry later,
            # and waking early for the old one finds nothing due (waking it per group kept a
            # tick under the lock beside every commit).

    async def release(self, lease_id: str) -> Lease:
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                return self.snapshot(lease.id)
            ledger = self.ledger
            now = self._clock.now()
            async with ledger.change():
                if lease.state in (LeaseState.PENDING, LeaseState.PARKED):
                    ledger.set_state(lease, LeaseState.RELEASED, "", now)
                else:
                    ledger.set_state(lease, LeaseState.RELEASING, "", now)
                if lease.server_id:
                    self.settler.settle(ledger.servers[lease.server_id], now)
                ledger.after_change(lease)
            await self.placer.place_pending()
        return self.snapshot(lease.id)

    async def note_reason(self, lease_id: str, reason: str) -> None:
        """Sets a live lease's reason without changing its state: a backend's problem with
        what serves its address (a Kubernetes Service it could not create), or "" once fixed."""
        async with self._lock:
            lease = self.ledger.leases.get(LeaseId(lease_id))
            if lease is None or lease.state.ended or lease.reason == reason:
                return
            async with self.ledger.change():
                self.ledger.set_state(lease, lease.state, reason, self._clock.now())
                self.ledger.notify(lease)

    async def follow(
        self, lease_id: str, *, until: Callable[[Lease], bool] | None = None
    ) -> AsyncIterator[Lease]:
        """The lease now and after each change, until it has ended (or `until` holds)."""
        stop = until or (lambda lease: lease.state.ended)
        # A name is resolved once: the follower watches that lease even if the name moves.
        lease_id = self.resolve(lease_id)
        while True:
            if self._get(lease_id).state is LeaseState.READY:
                # Whoever sees READY may call the lease's (or its name's) address at once.
                await self._backend.settled()
            # No await from the snapshot to taking the waiter: no change can slip between.
            lease = self.snapshot(lease_id)
            if stop(lease) or lease.state.ended:
                yield lease
                return
            changed = self.outbox.lease_waiter(lease.id)
            yield lease
            await changed.wait()

    # ------------------------------------------------------------------ sidecars

    def has_server(self, server_id: str) -> bool:
        return server_id in self.ledger.servers

    def desired(self, server_id: str) -> list[tuple[ModelName, str]]:
        """The models a server should hold now (what `assignments` yields next)."""
        server = self.ledger.servers.get(ServerId(server_id))
        if server is None or not server.state.alive:
            return []
        return self.ledger.desired(server.id)

    async def assignments(self, server_id: str) -> AsyncIterator[Assignment]:
        """The models a server should hold: now, then after every change, while it lives."""
        sid = ServerId(server_id)
        servers = self.ledger.servers
        while sid in servers and servers[sid].state.alive:
            changed = self.outbox.assignment_waiter(sid)
            yield Assignment(self.outbox.generation(sid), self.ledger.desired(sid))
            await changed.wait()

    async def report(
        self,
        server_id: str,
        *,
        triton_ready: bool,
        models: Iterable[ServedModel],
        leak: str = "",
        generation: int | None = None,
        cache: NodeCache | None = None,
    ) -> None:
        """What a server's sidecar reports: Triton's readiness, its models, a leak, its
        node's model cache. `generation` is the last assignment it had (a report from a
        sidecar of before a restart is ignored)."""
        async with self._lock:
            ledger = self.ledger
            server = ledger.servers.get(ServerId(server_id))
            if server is None or not server.state.alive:
                return
            if cache is not None:
                # Every server on a node shares its cache: the latest reading stands for it.
                first = ledger.nodes[0].name if ledger.nodes else ""
                self.node_caches[server.node or first] = cache
            if self.lifecycle.stale_report(server.id, generation):
                return
            now = self._clock.now()
            reported = {m.name: m for m in models}
            rescale = self.autoscaler.note(server.id, reported.values(), now)
            async with ledger.change():
                if rescale:
                    self.outbox.deadline_moved()
                active = self.settler.take_report(server, reported, triton_ready)
                if leak and not server.leak:
                    server.leak = leak
                    ledger.save_server(server)
                    self.outbox.event(
                        "server",
                        server.id,
                        "LEAKING",
                        f"{leak}; recycled once empty",
                        server_id=server.id,
                    )
                    self.outbox.deadline_moved()
                if triton_ready and server.state is ServerState.STARTING:
                    ledger.server_state(server, ServerState.RUNNING, "")
                    log.info("server %s is ready", server.id)
                self.settler.note_memory(server, now)
                self.settler.settle(server, now)
                self.settler.note_activity(server, active, now)
                if server.id in ledger.moving.incoming:
                    self.consolidator.advance(server.id, now)
                if self.reconciler.awaits_report(server.id):
                    # A lease there waited for this report to end, or to live on.
                    self.reconciler.check_idle(now, server.id)
            # A lease that ended here may have made room for one that waits.
            await self.placer.place_pending()

    # ------------------------------------------------------------------ names

    async def set_name(self, name: str, lease_id: str) -> LeaseNameRecord:
        """Points `name` at the lease: at once if it is READY, else as soon as it is."""
        requests.check_lease_name("name", name)
        async with self._lock:
            lease = self._get(lease_id)
            if lease.state.ended or lease.state is LeaseState.RELEASING:
                raise LeaseEnded(f"lease {lease.id} is {lease.state.value}; name a live lease")
            async with self.ledger.change():
                record = self.ledger.point_name(name, lease, self._clock.now())
            result = copy.deepcopy(record)
        await self._backend.settled()
        return result

    async def delete_name(self, name: str) -> LeaseNameRecord:
        async with self._lock, self.ledger.change():
            record = self.ledger.delete_name(name)
            if record is None:
                raise NameNotFound(name)
            return record

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do (the reconciler's)."""
        return self.reconciler.next_deadline()

    async def tick(self) -> None:
        """One reconciler pass (the daemon runs `reconciler.run`; the simulator and tests
        call this)."""
        await self.reconciler.tick()
