"""Fixtures for the Kubernetes backend: the API stand-in and a lease manager driving it.

The manager is the daemon's own (real store, real backend, real HTTP to the stand-in); the
tests speak for the sidecars in the pods (there are no pods: the stand-in runs no
controllers) through the manager's sidecar API, `report`, as the pods' sidecars would.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kubernetes.standin import Cluster
from tms_core.backends.kubernetes import KubernetesBackend, connect
from tms_core.clock import ManualClock
from tms_core.config import Settings, load_settings
from tms_core.domain import Lease, ModelState, ServedModel
from tms_core.identity.sidecar_keys import SidecarKeys
from tms_core.ids import ModelName
from tms_core.manager.facade import LeaseManager
from tms_core.store import Store

GiB = 1024**3
NAMESPACE = "inference"


@pytest.fixture(autouse=True)
def _no_tms_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TMS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    running = Cluster().start()
    try:
        yield running
    finally:
        running.close()


@dataclass
class Kube:
    """A lease manager on a Kubernetes backend against the stand-in."""

    cluster: Cluster
    state: Path
    settings: Settings
    clock: ManualClock
    store: Store
    backend: KubernetesBackend
    manager: LeaseManager

    async def sync(self) -> None:
        """One pass of the backend's loop: read pods and nodes, write Services and HPAs."""
        await self.backend.reconcile_once()

    async def report(self, lease: Lease, state: ModelState = ModelState.READY) -> Lease:
        """What the sidecar in the server's pod reports: every model of the server's live
        leases in `state`."""
        assert lease.server_id is not None
        models = {}
        for other in self.manager.list_leases():
            if other.server_id == lease.server_id and other.state.holds_models:
                models.update({m.name: m.uri for m in other.models})
        await self.manager.report(
            lease.server_id,
            triton_ready=True,
            models=[
                ServedModel(ModelName(name), uri, state) for name, uri in sorted(models.items())
            ],
        )
        return self.manager.snapshot(lease.id)

    async def unloaded(self, server_id: str) -> None:
        """The sidecar reports its server empty."""
        await self.manager.report(server_id, triton_ready=True, models=[])


def kube_settings(cluster: Cluster, tmp_path: Path, **kubernetes: object) -> Settings:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    return load_settings(
        daemon={"backend": "kubernetes"},
        servers={"memory": 8 * GiB, "max_servers": 4, "idle_grace": 30.0},
        lease={"default_duration": 600.0},
        kubernetes={
            "kubeconfig": kubeconfig,
            "namespace": NAMESPACE,
            "labels": {"team": "vision"},
            "annotations": {"owner": "ml-platform@example.com"},
            "request_timeout": 1.0,
            "model_volume": {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
            "poll_interval": 0.2,
            **kubernetes,
        },
    )


async def open_kube(cluster: Cluster, state: Path, settings: Settings) -> Kube:
    """The daemon's start-up, as `tms daemon` does it with `backend: kubernetes`."""
    api, namespace = connect(settings.kubernetes)
    # The tests run the backend's passes themselves (`sync`): nothing to wait for.
    backend = KubernetesBackend(
        settings.kubernetes,
        api,
        namespace,
        settle_within=0.0,
        # Each server's sidecar credential goes into a Secret of its own, as in the daemon.
        sidecar_credential=SidecarKeys(b"k" * 32).credential,
    )
    store = await Store.open(state)
    clock = ManualClock()
    manager = LeaseManager(store=store, backend=backend, clock=clock, settings=settings)

    backend.attach(manager.note_reason, manager.set_nodes)
    await backend.prepare()
    await manager.recover()
    return Kube(cluster, state, settings, clock, store, backend, manager)


@pytest.fixture
async def kube(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Kube]:
    k = await open_kube(cluster, tmp_path / "state.db", kube_settings(cluster, tmp_path))
    yield k
    await k.store.close()


@pytest.fixture
async def hpa_kube(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Kube]:
    """A daemon whose autoscaling leases get HorizontalPodAutoscalers (`autoscale_mode: hpa`)."""
    settings = kube_settings(cluster, tmp_path, autoscale_mode="hpa")
    k = await open_kube(cluster, tmp_path / "state.db", settings)
    yield k
    await k.store.close()
