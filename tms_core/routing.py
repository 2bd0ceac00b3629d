"""Which stable address goes where: the routes the router serves, from the lease state.

`compute_routes` is a pure function; `RouterProcess` runs the router (`python -m
tms_core.router`) beside the daemon and hands it new routes by file and SIGHUP. The router
outlives the daemon, so inference through lease and name addresses keeps flowing while the
daemon restarts; a daemon that starts again adopts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tms_core.domain import Lease, LeaseState, PublishedState, Server
from tms_core.procs import cmdline
from tms_core.router.proxy import HOLD_MAX, HOLD_S
from tms_core.router.routes import Route, applied_path, read_applied, write_routes

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
"""How long a new router has to apply its first table."""


def _holds(lease: Lease | None) -> bool:
    """Whether the lease's new connections wait for it (it is on its way to READY, as while
    its crashed server restarts) rather than being closed."""
    return lease is not None and lease.state in (LeaseState.PENDING, LeaseState.LOADING)


@dataclass(frozen=True)
class Waits:
    """How a lease's addresses treat connections that find no server."""

    hold: bool = False
    wake: bool = False
    hold_s: float = 0.0
    error: str = ""
    error_at: float = 0.0

    def route(
        self, listen: str, backends: tuple[str, ...], tag: str, protocol: str, lease: str = ""
    ) -> Route:
        """The route at `listen` that treats waiting connections so."""
        return Route(
            listen,
            backends,
            tag,
            self.hold,
            wake=self.wake,
            protocol=protocol,
            hold_s=self.hold_s,
            error=self.error,
            error_at=self.error_at,
            lease=lease,
        )


def route_waits(lease: Lease | None, wake_hold_s: float) -> Waits:
    if lease is None:
        return Waits()
    if lease.state is LeaseState.PARKED:
        # A connection wakes it; the ones held when a wake fails are answered with why.
        failed = lease.wake_failed
        return Waits(
            wake=True,
            hold_s=wake_hold_s,
            error=lease.reason if failed else "",
            error_at=(lease.wake_failed_at or 0.0) if failed else 0.0,
        )
    if lease.waking:
        # Held for the whole wake (a server's start and the loads), not the router's default.
        return Waits(hold=True, hold_s=wake_hold_s)
    return Waits(hold=_holds(lease))


def compute_routes(state: PublishedState, *, wake_hold_s: float = 0.0) -> list[Route]:
    # Every live lease and every name keeps its addresses bound, with or without servers
    # behind them, so no other process can take a port that clients were given. A lease's
    # address leads to each of its serving replicas (`PublishedState.serving`).
    routes: list[Route] = []
    for lease in state.leases.values():
        if lease.state.ended or not lease.http_port:
            continue
        routes.extend(
            _pair(
                lease.http_port,
                lease.grpc_port,
                state.serving(lease),
                f"lease {lease.id}",
                route_waits(lease, wake_hold_s),
            )
        )
    for record in state.names.values():
        target = state.leases.get(record.lease_id) if record.lease_id else None
        routes.extend(
            _pair(
                record.http_port,
                record.grpc_port,
                state.serving(target),
                f"name {record.name}",
                route_waits(target, wake_hold_s),
            )
        )
    return sorted(routes, key=lambda r: r.listen)


def _pair(
    http_port: int, grpc_port: int, backends: list[Server], what: str, waits: Waits
) -> list[Route]:
    return [
        waits.route(
            f"{HOST}:{port}",
            tuple(s.http_endpoint if protocol == "http" else s.grpc_endpoint for s in backends),
            f"{what} {protocol}",
            protocol,
        )
        for port, protocol in ((http_port, "http"), (grpc_port, "grpc"))
    ]


class RouterProcess:
    """The router process and the file it reads its routes from."""

    def __init__(
        self,
        state_dir: Path,
        *,
        hold_s: float = HOLD_S,
        hold_max: int = HOLD_MAX,
        wake_socket: str = "",
        cpu: str | int = "auto",
    ) -> None:
        self.hold_s = hold_s
        self.cpu = cpu
        self.wake_socket = wake_socket
        self.hold_max = hold_max
        self.routes_file = state_dir / "routes.json"
        self._log_file = state_dir / "router.log"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Versions only grow, across daemon restarts too: the router may outlive us.
        self._version = time.time_ns() // 1_000_000
        self._last: list[Route] | None = None

    def _is_ours(self, pid: int) -> bool:
        # As `_spawn` starts it: a shell or grep naming the file is not a router.
        return f"-m tms_core.router --routes={self.routes_file} " in cmdline(pid) + " "

    def _running_routers(self) -> list[int]:
        return [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and self._is_ours(int(entry.name))
        ]

    def ensure_running(self, recorded_pid: int | None) -> int:
        """Adopts the recorded router if it still runs, else starts one. Returns its pid."""
        # Not only the recorded one: a daemon killed while it started a router (reviving a
        # dead one) never recorded that router's pid. Two routers would fight over ports.
        running = self._running_routers()
        if recorded_pid in running:
            running.remove(recorded_pid)
            running.insert(0, recorded_pid)
        if running:
            self.pid, *others = running
            for other in others:
                log.warning("stopping a second router, pid %d", other)
                os.kill(other, signal.SIGTERM)
            log.info("adopting router pid %d", self.pid)
            return self.pid
        proc = self._spawn()
        # Until it has applied its first table it has no SIGHUP handler, and SIGHUP would
        # end it: wait for it to say it is in service.
        deadline = time.monotonic() + START_TIMEOUT_S
        while read_applied(applied_path(self.routes_file)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the router did not start; see {self._log_file}")
            time.sleep(0.01)
        self.pid = proc.pid
        log.info("router started, pid %d", proc.pid)
        return proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Starts a router; its pid is ours to signal only once it is in service."""
        if not self.routes_file.exists():
            write_routes(self.routes_file, 0, [])
        applied_path(self.routes_file).unlink(missing_ok=True)
        with open(self._log_file, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tms_core.router",
                    f"--routes={self.routes_file}",
                    f"--hold={self.hold_s:g}",
                    f"--hold-max={self.hold_max}",
                    f"--cpu={self.cpu}",
                    *([f"--wake-socket={self.wake_socket}"] if self.wake_socket else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self._proc

    def running(self) -> bool:
        """Whether the router we started (or adopted) still runs."""
        if self.pid is None:
            return False
        if self._proc is not None and self._proc.pid == self.pid:
            return self._proc.poll() is None
        return self._is_ours(self.pid)

    async def revive(self) -> int | None:
        """Starts a new router if ours died (it binds the same addresses, from the last
        table written); returns its pid, or None when the router runs. Raises RuntimeError
        when the new one does not come up (the caller tries again later)."""
        if self.pid is None or self.running():
            return None
        dead = self.pid
        # Not `self.pid` until it is in service: `update` would SIGHUP it, which ends it before
        # its handler is set. It reads the routes file at start and polls it after.
        proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        try:
            while read_applied(applied_path(self.routes_file)) is None:
                if proc.poll() is not None or loop.time() > deadline:
                    raise RuntimeError(f"the router did not start again; see {self._log_file}")
                await asyncio.sleep(0.01)
        except BaseException:
            # Cancelled (the daemon stopping) or failed: no router of ours may linger unknown.
            proc.kill()
            proc.wait()
            raise
        self.pid = proc.pid
        log.warning("router pid %d was gone; started pid %d", dead, proc.pid)
        return proc.pid

    def update(self, routes: list[Route]) -> None:
        if routes == self._last:
            return
        self._version += 1
        write_routes(self.routes_file, self._version, routes)
        self._last = routes
        # Checked first: the pid of a router that died may be another process's by now.
        if self.pid and self.running():
            try:
                os.kill(self.pid, signal.SIGHUP)
            except ProcessLookupError:
                log.warning("router pid %d is gone; routes wait for its restart", self.pid)

    async def settled(self, within: float = 2.0) -> None:
        """Returns once the router has applied the last table given to it (or after `within`
        seconds, logging that it has not)."""
        if self._last is None or self.pid is None:
            return
        applied = applied_path(self.routes_file)
        deadline = time.monotonic() + within
        while (read_applied(applied) or 0) < self._version:
            if time.monotonic() > deadline:
                log.warning("router has not applied routes version %d yet", self._version)
                return
            await asyncio.sleep(0.002)

    def stop(self) -> None:
        # Stopped on purpose: nothing for `revive` to bring back.
        pid, self.pid = self.pid, None
        if pid and (self._proc is not None or self._is_ours(pid)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                return
            # Adopted: not our child, so watch its command line go instead.
            deadline = time.monotonic() + 5
            while self._is_ours(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._is_ours(pid):
                os.kill(pid, signal.SIGKILL)
