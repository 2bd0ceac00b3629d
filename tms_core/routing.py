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
from pathlib import Path

from tms_core.domain import PublishedState, Server
from tms_core.procs import cmdline
from tms_core.router.routes import Route, applied_path, read_applied, write_routes

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def compute_routes(state: PublishedState) -> list[Route]:
    # Every live lease and every name keeps its addresses bound, with or without servers
    # behind them, so no other process can take a port that clients were given. A lease's
    # address leads to each of its serving replicas (`PublishedState.serving`).
    routes: list[Route] = []
    for lease in state.leases.values():
        if lease.state.ended or not lease.http_port:
            continue
        routes.extend(
            _pair(lease.http_port, lease.grpc_port, state.serving(lease), f"lease {lease.id}")
        )
    for record in state.names.values():
        target = state.leases.get(record.lease_id) if record.lease_id else None
        routes.extend(
            _pair(record.http_port, record.grpc_port, state.serving(target), f"name {record.name}")
        )
    return sorted(routes, key=lambda r: r.listen)


def _pair(http_port: int, grpc_port: int, backends: list[Server], what: str) -> list[Route]:
    return [
        Route(f"{HOST}:{http_port}", tuple(s.http_endpoint for s in backends), f"{what} http"),
        Route(f"{HOST}:{grpc_port}", tuple(s.grpc_endpoint for s in backends), f"{what} grpc"),
    ]


class RouterProcess:
    """The router process and the file it reads its routes from."""

    def __init__(self, state_dir: Path) -> None:
        self.routes_file = state_dir / "routes.json"
        self._log_file = state_dir / "router.log"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Versions only grow, across daemon restarts too: the router may outlive us.
        self._version = time.time_ns() // 1_000_000
        self._last: list[Route] | None = None

    def _is_ours(self, pid: int) -> bool:
        command = cmdline(pid)
        return "tms_core.router" in command and str(self.routes_file) in command

    def ensure_running(self, recorded_pid: int | None) -> int:
        """Adopts the recorded router if it still runs, else starts one. Returns its pid."""
        if recorded_pid and self._is_ours(recorded_pid):
            self.pid = recorded_pid
            log.info("adopting router pid %d", recorded_pid)
            return recorded_pid
        if not self.routes_file.exists():
            write_routes(self.routes_file, 0, [])
        applied_path(self.routes_file).unlink(missing_ok=True)
        with open(self._log_file, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tms_core.router", f"--routes={self.routes_file}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        # Until it has applied its first table it has no SIGHUP handler, and SIGHUP would
        # end it: wait for it to say it is in service.
        deadline = time.monotonic() + 10
        while read_applied(applied_path(self.routes_file)) is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the router did not start; see {self._log_file}")
            time.sleep(0.01)
        log.info("router started, pid %d", self.pid)
        return self.pid

    def update(self, routes: list[Route]) -> None:
        if routes == self._last:
            return
        self._version += 1
        write_routes(self.routes_file, self._version, routes)
        self._last = routes
        if self.pid:
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
        if self.pid and (self._proc is not None or self._is_ours(self.pid)):
            try:
                os.kill(self.pid, signal.SIGTERM)
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
            while self._is_ours(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._is_ours(self.pid):
                os.kill(self.pid, signal.SIGKILL)
