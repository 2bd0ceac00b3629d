"""`tms daemon` with `daemon.backend: kubernetes`, against the API stand-in: the same API and
CLI, with servers as Deployments and lease endpoints as Service DNS names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import Daemon, wait_for
from tests.kubernetes.conftest import NAMESPACE
from tests.kubernetes.standin import Cluster
from tms_core.api import tms_pb2 as pb
from tms_core.backends.local import free_ports


def config(cluster: Cluster, tmp_path: Path) -> Path:
    path = tmp_path / "tms.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "daemon": {"backend": "kubernetes"},
                "servers": {"memory": "4GiB", "idle_grace": "1s"},
                "kubernetes": {
                    "kubeconfig": str(cluster.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)),
                    "model_volume": {"persistentVolumeClaim": {"claimName": "models"}},
                    "poll_interval": "0.2s",
                    "request_timeout": "2s",
                    # This test follows the autoscaler through a daemon restart.
                    "autoscale_mode": "hpa",
                },
            }
        )
    )
    return path


def test_the_daemon_drives_the_cluster_and_adopts_on_restart(
    cluster: Cluster, tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    settings = config(cluster, tmp_path)
    daemon = make_daemon(f"--config={settings}")
    done = daemon.cli(
        "lease",
        "acquire",
        "--no-wait",
        "-m",
        "name=add_sub,uri=file:///model-store/add_sub",
        "--name",
        "adder",
        "--autoscale",
        "1:3",
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr
    lease = daemon.client.status(json.loads(done.stdout)["id"])
    assert lease.state == pb.LEASE_LOADING
    assert lease.endpoints.http == f"{lease.id}.{NAMESPACE}.svc.cluster.local:8000"
    assert lease.endpoints.grpc == f"{lease.id}.{NAMESPACE}.svc.cluster.local:8001"
    assert (lease.autoscale.min_replicas, lease.autoscale.max_replicas) == (1, 3)
    deployment = f"tms-{lease.server_id}"
    assert set(cluster.objects("deployments", NAMESPACE)) == {deployment}
    wait_for(
        lambda: (
            set(cluster.objects("services", NAMESPACE)) == {lease.id, "adder"}
            and lease.id in cluster.objects("horizontalpodautoscalers", NAMESPACE)
        ),
        timeout=10,
        what="the lease's Service, its name's Service and its autoscaler",
    )
    uid = cluster.objects("deployments", NAMESPACE)[deployment]["metadata"]["uid"]

    # Pods outlive the daemon's own: a daemon stopped and started again keeps them.
    assert daemon.stop() == 0
    assert set(cluster.objects("deployments", NAMESPACE)) == {deployment}
    again = make_daemon(f"--config={settings}")
    assert again.client.status(lease.id).server_id == lease.server_id
    assert cluster.objects("deployments", NAMESPACE)[deployment]["metadata"]["uid"] == uid
    assert "kubernetes backend, namespace inference" in again.log()


def test_the_local_daemon_scales_on_its_own_metrics_only(
    make_daemon: Callable[..., Daemon],
) -> None:
    # The local daemon decides replicas itself, from what sidecars read of their Triton: a
    # Prometheus adapter's metric name (an HPA's) is refused naming the field.
    daemon = make_daemon()
    model = Path(__file__).resolve().parents[2] / "examples" / "models" / "add_sub"
    done = daemon.cli(
        "lease",
        "acquire",
        "-m",
        f"name=add_sub,uri={model.as_uri()}",
        "--autoscale",
        "1:3",
        "--autoscale-metric",
        "nv_gpu_utilization",
    )
    assert done.returncode != 0
    assert "autoscale.metric: 'nv_gpu_utilization' is not one the daemon scales on" in done.stderr
    assert daemon.client.list_leases() == []


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    settings = tmp_path / "tms.yaml"
    settings.write_text(
        "daemon: {backend: kubernetes}\n"
        f"kubernetes: {{kubeconfig: {kubeconfig}, request_timeout: 2s}}\n"
    )
    daemon = Daemon(tmp_path / "state", f"--config={settings}")
    result = daemon.cli(
        "daemon", f"--listen={daemon.target}", f"--state={daemon.state}", *daemon.extra
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: Kubernetes API: listing Deployments failed (no answer)")
    assert "Traceback" not in result.stderr
