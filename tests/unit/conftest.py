"""Helpers for the unit tests: a fake in-memory backend, settings and a lease-manager harness.

Nothing here starts a process or opens a network port; time moves only by `ManualClock`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tms_core.backends.base import BackendDefaults
from tms_core.clock import ManualClock
from tms_core.config import Settings, load_settings
from tms_core.domain import Lease, ModelState, ServedModel, Server, ServerState
from tms_core.ids import ModelName, ServerId
from tms_core.lease_request import ModelRequest
from tms_core.manager.facade import LeaseManager
from tms_core.store import Store

GiB = 1024**3


@pytest.fixture(autouse=True)
def _no_tms_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see none of the developer's TMS_* variables (config file, binary, target)."""
    for name in list(os.environ):
        if name.startswith("TMS_"):
            monkeypatch.delenv(name)


FAKE_TRITON = "/fake/tritonserver"


class FakeBackend(BackendDefaults):
    """A `Backend` that runs nothing: servers get made-up ports and pids, and die on request."""

    default_tritonserver = FAKE_TRITON

    def __init__(self) -> None:
        self.created: list[ServerId] = []
        self.started: list[ServerId] = []
        self.stopped: list[ServerId] = []
        self.adopt_calls: list[ServerId] = []
        self.adopt_result = True
        self.dead: dict[ServerId, str] = {}
        self.restarted: list[ServerId] = []
        self.sidecars_restarted: list[ServerId] = []
        self._next_port = 41000
        self._next_pid = 5000

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        http, grpc, metrics = self._next_port, self._next_port + 1, self._next_port + 2
        self._next_port += 3
        self.created.append(server_id)
        return Server(
            id=server_id,
            state=ServerState.STARTING,
            host="127.0.0.1",
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            work_dir=f"/nonexistent/servers/{server_id}",
            capacity_bytes=capacity_bytes,
            created_at=now,
            binary=binary or FAKE_TRITON,
        )

    async def start(self, server: Server) -> None:
        server.pid = self._next_pid
        server.sidecar_pid = self._next_pid + 1
        self._next_pid += 2
        self.started.append(server.id)

    async def stop(self, server: Server) -> None:
        self.stopped.append(server.id)

    def exit_reason(self, server: Server) -> str | None:
        return self.dead.get(server.id)

    def adopt(self, server: Server) -> bool:
        self.adopt_calls.append(server.id)
        return self.adopt_result

    revives_servers = False
    """Set by the revival tests (the others see a backend whose crashed servers fail)."""

    def restart_sidecar(self, server: Server) -> bool:
        """A dead sidecar (a `dead` reason starting "sidecar") is replaced."""
        if not self.dead.get(server.id, "").startswith("sidecar"):
            return False
        del self.dead[server.id]
        server.sidecar_pid = self._next_pid
        self._next_pid += 1
        self.sidecars_restarted.append(server.id)
        return True

    async def restart(self, server: Server) -> bool:
        self.dead.pop(server.id, None)
        server.http_port = self._next_port
        self._next_port += 3
        await self.start(server)
        self.restarted.append(server.id)
        return True


def make_settings(
    *,
    servers: dict[str, Any] | None = None,
    local: dict[str, Any] | None = None,
    lease: dict[str, Any] | None = None,
    placement: dict[str, Any] | None = None,
) -> Settings:
    """Settings for a small, fast fleet; each section's dict overrides single values."""
    return load_settings(
        servers={
            "memory": 8 * GiB,
            "max_servers": 4,
            "idle_grace": 30.0,
            "start_timeout": 60.0,
            **(servers or {}),
        },
        local=local or {},
        lease={"default_duration": 600.0, "max_duration": 3600.0, **(lease or {})},
        placement=placement or {},
    )


def served(
    models: Iterable[tuple[str, str]], state: ModelState = ModelState.READY, error: str = ""
) -> list[ServedModel]:
    """What a sidecar would report for `(name, uri)` pairs, all in `state`."""
    return [ServedModel(ModelName(name), uri, state, error) for name, uri in models]


def pairs(lease: Lease) -> list[tuple[str, str]]:
    return [(m.name, m.uri) for m in lease.models]


def request(name: str, memory: int = GiB, uri: str | None = None) -> ModelRequest:
    return ModelRequest(name, uri or f"file:///models/{name}", memory)


@dataclass
class Harness:
    """A LeaseManager over a real SQLite store, a fake backend and a manual clock."""

    path: Path
    backend: FakeBackend
    clock: ManualClock
    settings: Settings
    store: Store
    manager: LeaseManager

    async def make_ready(self, lease: Lease) -> Lease:
        """Reports every model of `lease` (and of the server's other READY leases) READY."""
        assert lease.server_id is not None
        models = dict(pairs(lease))
        for other in self.manager.list_leases():
            if other.server_id == lease.server_id and other.id != lease.id:
                models.update(pairs(other))
        await self.manager.report(
            lease.server_id, triton_ready=True, models=served(sorted(models.items()))
        )
        return self.manager.snapshot(lease.id)

    async def restart(self) -> LeaseManager:
        """Closes the store and starts a new manager on the same state file (not recovered)."""
        await self.store.close()
        self.store = await Store.open(self.path)
        self.manager = LeaseManager(
            store=self.store,
            backend=self.backend,
            clock=self.clock,
            settings=self.settings,
        )
        return self.manager

    def desired(self, server_id: str) -> list[tuple[ModelName, str]]:
        return self.manager.desired(server_id)


async def open_harness(tmp_path: Path, settings: Settings | None = None) -> Harness:
    path = tmp_path / "state.db"
    store = await Store.open(path)
    backend = FakeBackend()
    clock = ManualClock()
    settings = settings or make_settings()
    manager = LeaseManager(
        store=store,
        backend=backend,
        clock=clock,
        settings=settings,
    )
    return Harness(path, backend, clock, settings, store, manager)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """Builds harnesses (`make_settings` keywords) and closes their stores afterwards."""
    made: list[Harness] = []

    async def make(
        *,
        servers: dict[str, Any] | None = None,
        local: dict[str, Any] | None = None,
        lease: dict[str, Any] | None = None,
        placement: dict[str, Any] | None = None,
    ) -> Harness:
        settings = make_settings(servers=servers, local=local, lease=lease, placement=placement)
        h = await open_harness(tmp_path / f"h{len(made)}", settings)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.store.close()


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()
