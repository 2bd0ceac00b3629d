"""Settling a server: moving its leases along after its sidecar reported, and what a report
itself carries (models measured larger than declared, inferences that renew leases).

A settle looks only at the server's leases that are not READY and at the READY ones whose
models the server reported a change to, so a report from a server holding thousands of
steady leases costs what changed. Everything here changes memory through the ledger inside
the caller's change; the caller holds the manager's lock.
"""

from __future__ import annotations

from tms_core import metrics
from tms_core.domain import Lease, LeaseState, ModelState, ServedModel, Server, ServerState
from tms_core.ids import LeaseId, ModelName, ServerId
from tms_core.manager.ledger import Ledger
from tms_core.manager.parked import may_park, wake_failed
from tms_core.manager.views import FleetViews
from tms_core.units import format_duration, format_size


class Settler:
    def __init__(self, ledger: Ledger, views: FleetViews) -> None:
        self._ledger = ledger
        self._views = views
        # Models whose reported state changed since the server was last settled.
        self._model_changes: dict[ServerId, set[ModelName]] = {}
        self.reported_at: dict[ServerId, float] = {}
        """When each server's sidecar last reported (memory only)."""

    def take_report(
        self, server: Server, reported: dict[ModelName, ServedModel], triton_ready: bool
    ) -> set[ModelName]:
        """Records a report on the server; returns the models that served an inference
        since the last one."""
        self.reported_at[server.id] = self._ledger.clock.now()
        changes = self._model_changes.setdefault(server.id, set())
        for name, served in reported.items():
            old = server.models.get(name)
            if old is None or (old.uri, old.state, old.error, old.load_s, old.bytes_done) != (
                served.uri,
                served.state,
                served.error,
                served.load_s,
                served.bytes_done,
            ):
                changes.add(name)
                _count_load(old, served)
        changes.update(name for name in server.models if name not in reported)
        active = {
            name
            for name, served in reported.items()
            if served.last_inference_at > getattr(server.models.get(name), "last_inference_at", 0.0)
        }
        server.models = reported
        server.triton_ready = triton_ready
        self._ledger.index.mark_changed(server.id)
        return active

    def note_memory(self, server: Server, now: float) -> None:
        """Records what models were measured to take; warns when one took more than declared.

        Placement then counts the larger of declared and measured for every model it has
        seen, so a model that under-declares is packed by what it really uses next time.
        """
        ledger = self._ledger
        for served in server.models.values():
            measured = served.measured_bytes
            key = (str(served.name), served.uri)
            if not served.uri or measured <= ledger.measured.get(key, 0):
                continue
            ledger.measured[key] = measured
            ledger.change_open.measured[key] = (measured, now)
            # Every server holding the model now counts it larger.
            self._views.refresh_servers(
                {
                    server_id
                    for server_id, load in ledger.index.loads.items()
                    if key in load.declared
                }
            )
            for lease in ledger.leases_on(server.id):
                for model in lease.models:
                    if (model.name, model.uri) != key:
                        continue
                    model.measured_bytes = measured
                    if 0 < model.memory_bytes < measured:
                        ledger.outbox.event(
                            "model",
                            model.name,
                            "OVER_DECLARED",
                            f"measured {format_size(measured)}, declared "
                            f"{format_size(model.memory_bytes)}",
                            lease_id=lease.id,
                            server_id=server.id,
                        )
                    ledger.save(lease)
                    ledger.notify(lease)

    def note_activity(self, server: Server, active: set[ModelName], now: float) -> None:
        """Notes the last inference of the leases on `server` that watch it: those renewed by
        activity, whose expiry it moves, and those that park when idle.

        An activity-renewed lease lives its duration from READY, then as long as one of its
        models served an inference within the last activity window. Only the leases of the
        models that were `active` since the last report can have moved.
        """
        load = self._ledger.load(server.id)
        if load is None or not active:
            return
        leases: dict[LeaseId, Lease] = {}
        for name in active:
            leases.update(load.by_model.get(name, {}))
        live = self._ledger.index.live
        for held in leases.values():
            # Inference on a replica is its lease's activity.
            lease = live.get(held.replica_of) if held.replica_of else held
            if lease is None or lease.state is not LeaseState.READY:
                continue
            if not (lease.activity_window_s or may_park(lease)):
                continue
            last = max(
                (
                    server.models[m.name].last_inference_at
                    for m in held.models
                    if m.name in server.models and server.models[m.name].uri == m.uri
                ),
                default=0.0,
            )
            if last <= lease.last_activity_at:
                continue
            lease.last_activity_at = last
            self._ledger.save(lease)
            if lease.activity_window_s:
                floor = (lease.ready_at or lease.created_at) + lease.duration_s
                before = lease.expires_at
                lease.expires_at = max(lease.expires_at, floor, last + lease.activity_window_s)
                if lease.expires_at > before:
                    self.announce_renewal(lease, "active", now)
            self._ledger.notify(lease)
            self._ledger.outbox.deadline_moved()

    def announce_renewal(self, lease: Lease, how: str, now: float) -> None:
        """A RENEWED event, so that watchers (the consoles' countdowns) see the new expiry
        without polling. Activity renews a used lease on every sidecar report; those are
        announced at most once per quarter of the lease's activity window."""
        if how == "active":
            last = self._ledger.renew_announced.get(lease.id)
            if last is not None and now - last < max(lease.activity_window_s / 4, 1.0):
                return
        self._ledger.renew_announced[lease.id] = now
        left = format_duration(max(0.0, lease.expires_at - now))
        self._ledger.outbox.event(
            "lease",
            lease.id,
            "RENEWED",
            f"{how}; expires in {left}",
            lease_id=lease.id,
            server_id=lease.server_id or "",
        )

    def settle(self, server: Server, now: float) -> None:
        """Moves the server's leases along after its models changed."""
        ledger = self._ledger
        failed_any = False
        load = ledger.load(server.id)
        changed = self._model_changes.pop(server.id, set())
        visit: dict[LeaseId, Lease] = dict(load.unsteady) if load is not None else {}
        if load is not None:
            # A READY lease moves only when the server reported a change to one of its models.
            for name in changed:
                visit.update(load.by_model.get(name, {}))
        for lease in list(visit.values()):
            if lease.state is LeaseState.READY and self._nothing_new(lease, server):
                continue
            before = (lease.state, [(m.state, m.error) for m in lease.models])
            progress = [m.bytes_done for m in lease.models]
            if lease.state is LeaseState.LOADING:
                self.sync_models(lease, server)
                failed = [m for m in lease.models if m.state is ModelState.FAILED]
                if failed:
                    model = failed[0]
                    why = f"model {model.name!r}: {model.error}"
                    if lease.waking:
                        # A parked lease stays: the next connection may find it loads.
                        wake_failed(ledger, lease, why, now)
                    else:
                        ledger.set_state(lease, LeaseState.FAILED, why, now)
                    failed_any = True
                elif server.triton_ready and all(m.state is ModelState.READY for m in lease.models):
                    woke = ""
                    if lease.waking and lease.woke_at is not None:
                        lease.wake_s = now - lease.woke_at
                        lease.wake_pending = False
                        woke = f"woke in {lease.wake_s:.2f}s"
                    lease.ready_at = now
                    # The duration counts from READY: loading time is not the holder's to pay.
                    # A renewal made while loading may already reach further. Set before the
                    # state, so the index enters the lease's expiry as it is.
                    lease.expires_at = max(lease.expires_at, now + lease.duration_s)
                    ledger.set_state(lease, LeaseState.READY, woke, now)
            elif lease.state is LeaseState.READY:
                self.sync_models(lease, server)
            elif lease.state is LeaseState.RELEASING:
                self.sync_models(lease, server)
                still_wanted = {name for name, _ in ledger.desired(server.id)}
                # A model missing from the reports is gone only once the sidecar has spoken
                # since this daemon took the server over (an adopted server starts silent).
                if server.triton_ready and all(
                    m.name in still_wanted
                    or m.name not in server.models
                    or server.models[m.name].state is ModelState.UNLOADED
                    for m in lease.models
                ):
                    ledger.set_state(lease, LeaseState.RELEASED, "", now)
            if (lease.state, [(m.state, m.error) for m in lease.models]) != before:
                ledger.save(lease)
                ledger.after_change(lease)
            elif [m.bytes_done for m in lease.models] != progress:
                # Download progress only: followers see it; nothing to store or reassign.
                ledger.notify(lease)
        if failed_any:
            ledger.bump(server.id)
        if server.state in (ServerState.RUNNING, ServerState.STARTING):
            busy = server.id in ledger.index.loads
            if busy and server.idle_since is not None:
                server.idle_since = None
                ledger.save_server(server)
            elif not busy and server.idle_since is None:
                server.idle_since = now
                ledger.save_server(server)
                ledger.outbox.deadline_moved()
        ledger.index.unsettled.discard(server.id)

    def _nothing_new(self, lease: Lease, server: Server) -> bool:
        """Whether `sync_models` would change nothing on the lease."""
        measured = self._ledger.measured
        for model in lease.models:
            served = server.models.get(model.name)
            if (
                served is None
                or served.uri != model.uri
                or served.state is not model.state
                or served.error != model.error
                or served.bytes_done != model.bytes_done
                or (served.load_s and served.load_s != model.load_s)
            ):
                return False
            if measured and model.measured_bytes != measured.get((str(model.name), model.uri), 0):
                return False
        return True

    def sync_models(self, lease: Lease, server: Server) -> None:
        """Copies what the server reports of the lease's models onto the lease."""
        measured = self._ledger.measured
        for model in lease.models:
            served = server.models.get(model.name)
            if served is None or served.uri != model.uri:
                if model.state is not ModelState.FAILED:
                    model.state = (
                        ModelState.UNLOADED
                        if lease.state is LeaseState.RELEASING
                        and model.state is not ModelState.PENDING
                        else ModelState.PENDING
                    )
                continue
            if (model.state, model.error) != (served.state, served.error):
                self._ledger.outbox.event(
                    "model",
                    model.name,
                    served.state.value,
                    served.error,
                    lease_id=lease.id,
                    server_id=server.id,
                )
            if (
                served.state is ModelState.FETCHING
                and model.state is ModelState.FETCHING
                and served.bytes_done != model.bytes_done
            ):
                self._ledger.outbox.event(
                    "model",
                    model.name,
                    "FETCHING",
                    _progress_text(served.bytes_done, served.bytes_total),
                    lease_id=lease.id,
                    server_id=server.id,
                    progress=(served.bytes_done, served.bytes_total),
                )
            model.state, model.error = served.state, served.error
            model.bytes_done, model.bytes_total = served.bytes_done, served.bytes_total
            if served.load_s:
                model.load_s = served.load_s
            model.measured_bytes = measured.get((str(model.name), model.uri), 0)


def _progress_text(done: int, total: int) -> str:
    if total:
        return f"{format_size(done)} of {format_size(total)}"
    return f"{format_size(done)} so far"


def _count_load(old: ServedModel | None, served: ServedModel) -> None:
    """A model that has just become READY or FAILED on its server, in the daemon's metrics."""
    if old is not None and old.state is served.state:
        return
    if served.state is ModelState.READY and served.load_s:
        metrics.MODEL_LOADS.labels("ready").inc()
        metrics.MODEL_LOAD_SECONDS.observe(served.load_s)
    elif served.state is ModelState.FAILED:
        metrics.MODEL_LOADS.labels("failed").inc()
