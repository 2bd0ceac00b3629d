"""The activator's token on Kubernetes: the daemon makes it at start, writes it into the Secret
the activator mounts, and reuses it on a restart; a revoked one is replaced. Against the API
stand-in, with `tms daemon` as it runs in the cluster."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml

from tests.conftest import Daemon
from tests.kubernetes.conftest import NAMESPACE
from tests.kubernetes.standin import Cluster, api_request
from tests.kubernetes.test_daemon import config
from tests.kubernetes.test_manifests import granted
from tms_core.api import tms_pb2 as pb
from tms_core.api import tms_pb2_grpc as pb_grpc
from tms_core.backends.kubernetes_secrets import TOKEN_KEY

SECRET = "tms-activator-token"


def held(cluster: Cluster) -> str:
    """The token in the activator's Secret."""
    secret = cluster.objects("secrets", NAMESPACE)[SECRET]
    return base64.b64decode(secret["data"][TOKEN_KEY]).decode()


def secret_calls(cluster: Cluster) -> list[str]:
    return [verb for group, plural, verb in cluster.calls if plural == "secrets"]


def refusal(target: str, token: str, call: str, request: object) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.LeaseServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            getattr(stub, call)(request, metadata=(("authorization", f"Bearer {token}"),))
    return caught.value.code()  # type: ignore[no-any-return,attr-defined]


def activator_tokens(daemon: Daemon) -> list[tuple[str, str, bool]]:
    return [
        (t.name, t.role, t.revoked_at > 0)
        for t in daemon.client.list_tokens()
        if t.name == "activator"
    ]


def test_the_daemon_makes_the_activators_token_once_and_reuses_it(
    cluster: Cluster, tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    settings = config(cluster, tmp_path)
    daemon = make_daemon(f"--config={settings}")
    token = held(cluster)
    assert token.startswith("tms_")
    labels = cluster.objects("secrets", NAMESPACE)[SECRET]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "tms"
    assert activator_tokens(daemon) == [("activator", "activator", False)]
    # It may wake (a lease that does not exist: NOT_FOUND, past the role check), nothing else.
    assert refusal(daemon.target, token, "Wake", pb.LeaseRef(id="l-none")) is (
        grpc.StatusCode.NOT_FOUND
    )
    assert refusal(daemon.target, token, "List", pb.ListRequest()) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # The secret is in the Secret, and nowhere in the log.
    assert "activator token 'activator' made and written to Secret" in daemon.log()
    assert token not in daemon.log()
    created = daemon.client.list_tokens()

    # A restart finds the token working: no second token, the Secret untouched.
    assert daemon.stop() == 0
    before = len(cluster.calls)
    again = make_daemon(f"--config={settings}")
    assert held(cluster) == token
    assert again.client.list_tokens() == created
    assert [v for _, p, v in cluster.calls[before:] if p == "secrets"].count("get") == 1
    assert {"create", "patch"}.isdisjoint(v for _, p, v in cluster.calls[before:] if p == "secrets")

    # Revoked, it is replaced at the next start (the Secret patched in place).
    again.client.revoke_token("activator")
    assert again.stop() == 0
    before = len(cluster.calls)
    third = make_daemon(f"--config={settings}")
    replaced = held(cluster)
    assert replaced != token
    assert "patch" in [v for _, p, v in cluster.calls[before:] if p == "secrets"]
    assert activator_tokens(third) == [("activator", "activator", False)]
    assert refusal(third.target, token, "Wake", pb.LeaseRef(id="l-none")) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert refusal(third.target, replaced, "Wake", pb.LeaseRef(id="l-none")) is (
        grpc.StatusCode.NOT_FOUND
    )
    assert replaced not in third.log()
    made = set(cluster.calls)
    assert made <= granted(), f"calls the Role does not grant: {sorted(made - granted())}"


def test_a_hand_made_admin_token_in_the_secret_is_replaced(
    cluster: Cluster, tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    # The Secret an operator made before the daemon did, holding an admin token.
    settings = config(cluster, tmp_path)
    daemon = make_daemon(f"--config={settings}")
    admin = daemon.client.create_token("old-activator", "admin").secret
    assert daemon.stop() == 0
    api_request(
        cluster,
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}",
        {"data": {TOKEN_KEY: base64.b64encode(admin.encode()).decode()}},
    )
    again = make_daemon(f"--config={settings}")
    assert held(cluster) not in (admin, "")
    assert refusal(again.target, held(cluster), "List", pb.ListRequest()) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert "holds token 'old-activator' of role admin" in again.log()
    assert admin not in again.log()


def test_no_secret_when_the_operator_keeps_it(
    cluster: Cluster, tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    settings = config(cluster, tmp_path)
    values = yaml.safe_load(settings.read_text())
    values["kubernetes"]["activator_token_secret"] = ""
    settings.write_text(yaml.safe_dump(values))
    daemon = make_daemon(f"--config={settings}")
    assert SECRET not in cluster.objects("secrets", NAMESPACE)
    assert activator_tokens(daemon) == []
    assert secret_calls(cluster).count("get") == 0
