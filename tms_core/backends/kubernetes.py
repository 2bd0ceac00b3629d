"""The Kubernetes backend: servers are Deployments, lease addresses are Services.

The one module that imports the `kubernetes` client. Its calls block, so each runs in a worker
thread with a time limit; every failure (403, 409, 422, 500, a timeout, no connection) becomes
a `KubernetesApiError` whose message says what was being done and what the API answered.

- `start`/`stop` create and delete a server's Deployment (`kubernetes_objects`).
- `publish` hears the state after every commit (the lease manager's `publish_state`) and
  `run` makes the Services, EndpointSlices, autoscalers and the activator's routes ConfigMap
  match it (`kubernetes_addresses`),
  deleting what the state no longer asks for; a failure becomes the reason of the lease it
  concerns.
- `run` also reads pods (server health for `exit_reason`, addresses for EndpointSlices) and
  nodes (the GPU inventory).
- `prepare` reads what exists before the manager recovers: `adopt` keeps a server whose
  Deployment is there; Deployments of servers the state does not hold are deleted.
- `activator_token` reads and writes the activator's token Secret (the daemon decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from tms_core import modelrepo
from tms_core.backends import kubernetes_addresses as addresses
from tms_core.backends import kubernetes_objects as objects
from tms_core.backends import kubernetes_status as kstatus
from tms_core.backends.base import BackendDefaults
from tms_core.backends.kubernetes_secrets import (
    MERGE_PATCH,
    ActivatorReader,
    ActivatorTokenSecret,
    SidecarSecrets,
)
from tms_core.backends.kubernetes_status import KubernetesApiError
from tms_core.config import KubernetesSettings
from tms_core.domain import PublishedState, Server, ServerState
from tms_core.ids import LeaseId, ServerId
from tms_core.inventory import Node
from tms_core.repos.fetcher import Repositories
from tms_core.repos.settings import RepositorySettings

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The (API group, resource, verb) the backend calls: the Role in manifests/ grants exactly these
# (a test compares them, and the integration tests check no other call is made).
API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("apps", "deployments", "create"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "delete"),
        ("", "services", "create"),
        ("", "services", "list"),
        ("", "services", "patch"),
        ("", "services", "delete"),
        ("discovery.k8s.io", "endpointslices", "create"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "patch"),
        ("discovery.k8s.io", "endpointslices", "delete"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("", "pods", "list"),
        ("", "nodes", "list"),
        ("", "secrets", "create"),
        ("", "secrets", "list"),
        ("", "secrets", "delete"),
        # The activator's token Secret only (the Role names it): `activator_token`.
        ("", "secrets", "get"),
        ("", "secrets", "patch"),
        ("", "configmaps", "create"),
        ("", "configmaps", "list"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "delete"),
    }
)


def connect(settings: KubernetesSettings) -> tuple[k8s.ApiClient, str]:
    """An API client (the pod's service account first, else the kubeconfig) and the namespace
    to work in."""
    namespace = settings.namespace
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        configuration = k8s.Configuration.get_default_copy()
        if not namespace and SERVICE_ACCOUNT_NAMESPACE.exists():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except ConfigException:
        configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context or None,
                client_configuration=configuration,
            )
            if not namespace:
                contexts, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=str(settings.kubeconfig) if settings.kubeconfig else None
                )
                chosen = next((c for c in contexts if c.get("name") == settings.context), current)
                namespace = (chosen or {}).get("context", {}).get("namespace", "")
        except (ConfigException, OSError) as exc:
            raise KubernetesApiError(
                "loading the configuration", 0, f"not in a pod and no usable kubeconfig ({exc})"
            ) from None
    # One attempt per call: a timeout must become a reason promptly, not after retries.
    configuration.retries = 0
    return k8s.ApiClient(configuration), namespace or "tms"


class KubernetesBackend(BackendDefaults):
    @property
    def hpa_autoscaling(self) -> bool:
        return self._settings.autoscale_mode == "hpa"

    def __init__(
        self,
        settings: KubernetesSettings,
        api: k8s.ApiClient,
        namespace: str,
        *,
        lease_problem: Callable[[LeaseId, str], Awaitable[None]] | None = None,
        nodes_changed: Callable[[list[Node]], Awaitable[None]] | None = None,
        settle_within: float = 5.0,
        repositories: RepositorySettings | None = None,
        sidecar_credential: Callable[[str], str] | None = None,
        wake_hold_s: float = 120.0,
        triton_args: Sequence[str] = (),
    ) -> None:
        self._settings = settings
        self._triton_args = tuple(triton_args)
        # Kept as given: each sidecar's environment holds them as JSON (server_deployment).
        self._repository_settings = repositories or RepositorySettings()
        self._repositories = Repositories(self._repository_settings)
        self._check_model = objects.check_model_uri(settings)
        self.namespace = namespace
        self._apps = k8s.AppsV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._autoscaling = k8s.AutoscalingV2Api(api)
        self._discovery = k8s.DiscoveryV1Api(api)
        self._secrets = SidecarSecrets(
            call=self._call,
            list_=self._list,
            delete=self._delete,
            core=self._core,
            namespace=namespace,
            settings=settings,
            credential=sidecar_credential,
        )
        self._wake_hold_s = wake_hold_s
        self._activator = ActivatorReader(list_=self._list, core=self._core, settings=settings)
        self.activator_token = ActivatorTokenSecret(
            call=self._call, core=self._core, namespace=namespace, settings=settings
        )
        self._lease_problem = lease_problem
        self._nodes_changed = nodes_changed
        self._settle_within = settle_within
        self._plans: dict[ServerId, objects.ServerPlan] = {}
        # Server id -> its Deployment's uid, for what exists now (read or created by us).
        self._deployments: dict[ServerId, str] = {}
        self._problems: dict[ServerId, str] = {}
        # Each server's pods with an address, as last listed (what EndpointSlices list).
        self._pods: dict[ServerId, list[addresses.PodAddress]] = {}
        self._published: PublishedState | None = None
        self._wanted = 0
        self._applied = 0
        self._wake = asyncio.Event()
        self._applied_changed = asyncio.Event()
        # What was last said to each lease about its objects ("" once they are fine again).
        self._told: dict[LeaseId, str] = {}
        self.nodes: list[Node] = []

    # ------------------------------------------------------------------ API calls

    async def _call(self, action: str, method: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Runs one API call in a thread; its JSON answer as a dict."""
        kw.setdefault("_request_timeout", self._settings.request_timeout)
        kw["_preload_content"] = False
        try:
            response = await asyncio.to_thread(method, *args, **kw)
        except ApiException as exc:
            raise KubernetesApiError(action, exc.status or 0, kstatus.api_message(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            cause = getattr(exc, "reason", None)
            if isinstance(exc, urllib3.exceptions.TimeoutError) or isinstance(
                cause, urllib3.exceptions.TimeoutError
            ):
                raise KubernetesApiError(
                    action, 0, f"timed out after {self._settings.request_timeout:g}s"
                ) from None
            raise KubernetesApiError(action, 0, str(exc) or type(exc).__name__) from None
        data = response.data
        return json.loads(data) if data else {}

    async def _list(self, what: str, method: Callable[..., Any], selector: str) -> list[Any]:
        answer = await self._call(
            f"listing {what}", method, namespace=self.namespace, label_selector=selector
        )
        return list(answer.get("items") or [])

    async def _delete(self, kind: str, name: str, method: Callable[..., Any]) -> None:
        try:
            await self._call(
                f"deleting {kind} {name}",
                method,
                name=name,
                namespace=self.namespace,
                body=k8s.V1DeleteOptions(propagation_policy="Background"),
            )
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise

    # ------------------------------------------------------------------ Backend protocol

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        return Server(
            id=server_id,
            state=ServerState.STARTING,
            host=objects.deployment_name(server_id),
            http_port=objects.HTTP_PORT,
            grpc_port=objects.GRPC_PORT,
            metrics_port=objects.METRICS_PORT,
            work_dir=f"deployment/{objects.deployment_name(server_id)}",
            capacity_bytes=capacity_bytes,
            created_at=now,
            binary=binary or self._settings.triton_image,
        )

    async def start(self, server: Server) -> None:
        await self._secrets.create(server)
        plan = self._plans.get(server.id) or objects.ServerPlan(image=server.binary)
        manifest = objects.server_deployment(
            server,
            plan,
            namespace=self.namespace,
            settings=self._settings,
            repositories=self._repository_settings,
            triton_args=self._triton_args,
        )
        created = await self._call(
            f"creating Deployment {manifest['metadata']['name']}",
            self._apps.create_namespaced_deployment,
            namespace=self.namespace,
            body=manifest,
        )
        self._deployments[server.id] = str(created.get("metadata", {}).get("uid", ""))
        self._problems.pop(server.id, None)
        log.info("server %s: Deployment %s created", server.id, manifest["metadata"]["name"])
        self._wake.set()

    async def stop(self, server: Server) -> None:
        name = objects.deployment_name(server.id)
        selector = f"{objects.MANAGED_BY}={objects.MANAGER},{objects.SERVER_LABEL}={server.id}"
        try:
            # Its autoscalers are owned by the Deployment, but go at once rather than later.
            for hpa in await self._list(
                "HorizontalPodAutoscalers",
                self._autoscaling.list_namespaced_horizontal_pod_autoscaler,
                selector,
            ):
                await self._delete(
                    "HorizontalPodAutoscaler",
                    hpa["metadata"]["name"],
                    self._autoscaling.delete_namespaced_horizontal_pod_autoscaler,
                )
            # Its pods end on their own; the scheduler gives their GPUs to a new pod only then.
            await self._delete("Deployment", name, self._apps.delete_namespaced_deployment)
            self._deployments.pop(server.id, None)
            await self._secrets.delete(server.id)
        except KubernetesApiError as exc:
            # Stopping is retried: the reconciler deletes Deployments the state does not hold.
            log.warning("server %s: %s", server.id, exc)
        self._plans.pop(server.id, None)
        self._problems.pop(server.id, None)

    def service_host(self, key: str) -> str:
        """The DNS name of the Service of a lease (its id) or of a lease name."""
        return f"{key}.{self.namespace}.{self._settings.service_domain}"

    @property
    def default_tritonserver(self) -> str:
        return self._settings.triton_image

    def allocate_ports(self, count: int) -> list[int]:
        # Every Service has its own address: lease and name ports are Triton's own.
        return [objects.HTTP_PORT, objects.GRPC_PORT][:count]

    def check_tritonserver(self, binary: str) -> None:
        objects.check_image(binary)

    def check_model(self, field: str, name: str, uri: str) -> str | None:
        return self._check_model(field, name, uri)

    async def check_present(self, field: str, name: str, uri: str) -> None:
        # The daemon's pod reaches the stores with the same Secret as the sidecars.
        await modelrepo.check_present(field, name, uri, self._repositories)

    def attach(
        self,
        lease_problem: Callable[[LeaseId, str], Awaitable[None]],
        nodes_changed: Callable[[list[Node]], Awaitable[None]],
    ) -> None:
        """Where lease problems and node changes go (the manager, built after the backend)."""
        self._lease_problem, self._nodes_changed = lease_problem, nodes_changed

    def exit_reason(self, server: Server) -> str | None:
        return self._problems.get(server.id)

    def adopt(self, server: Server) -> bool:
        return server.id in self._deployments

    # ------------------------------------------------------------------ start-up

    async def prepare(self) -> None:
        """Reads the Deployments that exist, before the manager decides what to adopt."""
        await self._read_deployments()
        await self._read_nodes()

    async def _read_deployments(self) -> dict[ServerId, Any]:
        before = dict(self._deployments)
        found: dict[ServerId, Any] = {}
        for item in await self._list(
            "Deployments", self._apps.list_namespaced_deployment, objects.managed_selector("server")
        ):
            server_id = item.get("metadata", {}).get("labels", {}).get(objects.SERVER_LABEL)
            if server_id:
                found[ServerId(server_id)] = item
        listed = {sid: str(item.get("metadata", {}).get("uid", "")) for sid, item in found.items()}
        # One that `start` created while the list was under way is not gone.
        created = {s: uid for s, uid in self._deployments.items() if s not in before}
        self._deployments = {**listed, **created}
        return found

    async def _read_nodes(self) -> None:
        answer = await self._call("listing nodes", self._core.list_node)
        nodes = [
            node
            for item in answer.get("items") or []
            if (node := kstatus.node_from_manifest(item)) is not None
        ]
        if nodes != self.nodes:
            self.nodes = nodes
            if self._nodes_changed is not None:
                await self._nodes_changed(nodes)

    # ------------------------------------------------------------------ Services, autoscalers

    def publish(self, state: PublishedState) -> None:
        """Takes the state just committed; `run` brings the cluster to it."""
        plans: dict[ServerId, objects.ServerPlan] = {}
        for lease in state.leases.values():
            if lease.server_id is None or lease.state.ended:
                continue
            server = state.servers.get(lease.server_id)
            if server is None:
                continue
            # Only an HPA multiplies a server's pods; the daemon's replicas are servers.
            scale = lease.autoscale if self.hpa_autoscaling else None
            if scale is not None or lease.server_id not in plans:
                plans[lease.server_id] = objects.ServerPlan(
                    image=server.binary,
                    autoscale=scale,
                    node_selector=lease.constraints.node_selector if scale else None,
                )
        self._plans.update(plans)
        # Copies: the manager goes on changing its own.
        self._published = PublishedState(
            {k: _copy(v) for k, v in state.leases.items()},
            {k: _copy(v) for k, v in state.names.items()},
            {k: _copy(v) for k, v in state.servers.items()},
            {k: {r: _copy(x) for r, x in v.items()} for k, v in state.replicas.items()},
        )
        self._wanted += 1
        self._wake.set()

    async def settled(self) -> None:
        """Returns once the cluster has the last published Services (or after a while, saying
        so): whoever sees a lease READY may call its Service."""
        target, within = self._wanted, self._settle_within
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._applied < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if within:
                    log.warning("Services not yet as published after %.0fs", within)
                return
            self._applied_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied_changed.wait(), remaining)

    async def run(self) -> None:
        """The backend's loop: reconcile objects on every change and every poll interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
            self._wake.clear()
            await self.reconcile_once()

    async def reconcile_once(self) -> None:
        listed: set[ServerId] = set()
        try:
            listed = await self._read_health()
        except KubernetesApiError as exc:
            log.warning("%s", exc)
        try:
            await self._read_nodes()
        except KubernetesApiError as exc:
            log.warning("%s", exc)
        secrets = await self._secrets.listed()
        # Taken after the listings: a Deployment or a server's Secret is created only after
        # the state naming its server is published, so every listed one the state lacks is
        # truly an orphan.
        target, state = self._wanted, self._published
        if state is None:
            # Nothing published yet (the manager is recovering): nothing is an orphan yet.
            return
        await self._secrets.prune(secrets, state)
        desired = addresses.desired_objects(
            state.leases,
            state.names,
            state.servers,
            namespace=self.namespace,
            settings=self._settings,
            owner_uids=self._deployments,
            replicas=state.replicas,
            pods=self._pods,
            activator=await self._activator.read(state),
            wake_hold_s=self._wake_hold_s,
        )
        problems = await self._reconcile_objects(state, desired, listed)
        await self._tell_leases(state, desired, problems)
        self._applied = max(self._applied, target)
        self._applied_changed.set()

    async def _read_health(self) -> set[ServerId]:
        """Reads Deployments and pods; notes what is wrong with each server. Returns the
        servers whose Deployments were listed."""
        listed_before = set(self._deployments)
        deployments = await self._read_deployments()
        # A Deployment created while the list was under way is not missing.
        for server_id in listed_before - set(deployments):
            if server_id in self._plans and server_id not in self._problems:
                self._problems[server_id] = "its Deployment was deleted from the cluster"
        pods = await self._list(
            "pods", self._core.list_namespaced_pod, objects.managed_selector("server")
        )
        found: dict[ServerId, list[addresses.PodAddress]] = {}
        for pod in pods:
            server_id = pod.get("metadata", {}).get("labels", {}).get(objects.SERVER_LABEL)
            problem = kstatus.pod_problem(pod)
            if server_id and problem:
                self._problems.setdefault(ServerId(server_id), problem)
            address = kstatus.pod_address(pod)
            if address is not None:
                found.setdefault(address.server_id, []).append(address)
        self._pods = found
        return set(deployments)

    async def _reconcile_objects(
        self, state: PublishedState, desired: addresses.Desired, listed: set[ServerId]
    ) -> dict[str, str]:
        """Creates, patches and deletes Services, EndpointSlices and autoscalers to match
        `desired`, and deletes Deployments of servers `state` does not hold; returns the
        problems met, by `Kind/name`."""
        problems: dict[str, str] = {}
        kinds = (
            (
                "Service",
                desired.services,
                "lease,name",
                self._core.list_namespaced_service,
                self._core.create_namespaced_service,
                self._core.patch_namespaced_service,
                self._core.delete_namespaced_service,
            ),
            (
                # After the Services: a slice lists the pods of a Service written above.
                "EndpointSlice",
                desired.endpoint_slices,
                "endpoints",
                self._discovery.list_namespaced_endpoint_slice,
                self._discovery.create_namespaced_endpoint_slice,
                self._discovery.patch_namespaced_endpoint_slice,
                self._discovery.delete_namespaced_endpoint_slice,
            ),
            (
                "ConfigMap",
                desired.config_maps,
                "activator",
                self._core.list_namespaced_config_map,
                self._core.create_namespaced_config_map,
                self._core.patch_namespaced_config_map,
                self._core.delete_namespaced_config_map,
            ),
            (
                "HorizontalPodAutoscaler",
                desired.autoscalers,
                "autoscaler",
                self._autoscaling.list_namespaced_horizontal_pod_autoscaler,
                self._autoscaling.create_namespaced_horizontal_pod_autoscaler,
                self._autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                self._autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            ),
        )
        for kind, wanted, kinds_label, list_, create, patch, delete in kinds:
            selector = (
                f"{objects.MANAGED_BY}={objects.MANAGER},{objects.KIND_LABEL} in ({kinds_label})"
            )
            try:
                existing = {
                    item["metadata"]["name"]: item
                    for item in await self._list(f"{kind}s", list_, selector)
                }
            except KubernetesApiError as exc:
                for name in wanted:
                    problems[f"{kind}/{name}"] = str(exc)
                continue
            for name, manifest in wanted.items():
                try:
                    if name not in existing:
                        await self._call(
                            f"creating {kind} {name}",
                            create,
                            namespace=self.namespace,
                            body=manifest,
                        )
                    elif kstatus.differs(manifest, existing[name]):
                        await self._call(
                            f"updating {kind} {name}",
                            patch,
                            name=name,
                            namespace=self.namespace,
                            body=kstatus.patch_of(manifest),
                            _content_type=MERGE_PATCH,
                        )
                except KubernetesApiError as exc:
                    problems[f"{kind}/{name}"] = str(exc)
            for name in set(existing) - set(wanted):
                try:
                    await self._delete(kind, name, delete)
                    log.info("deleted %s %s (no lease or name asks for it)", kind, name)
                except KubernetesApiError as exc:
                    log.warning("%s", exc)
        alive = {sid for sid, s in state.servers.items() if s.state.alive}
        for server_id in listed - alive:
            name = objects.deployment_name(server_id)
            try:
                await self._delete("Deployment", name, self._apps.delete_namespaced_deployment)
                self._deployments.pop(server_id, None)
                log.info("deleted Deployment %s (a server the daemon does not hold)", name)
            except KubernetesApiError as exc:
                log.warning("%s", exc)
        return problems

    async def _tell_leases(
        self, state: PublishedState, desired: addresses.Desired, problems: Mapping[str, str]
    ) -> None:
        """Sets (or clears) the reason of each lease whose objects could (not) be written."""
        now: dict[LeaseId, str] = {}
        for key, problem in sorted(problems.items()):
            lease_id = desired.lease_of.get(key)
            if lease_id:
                now.setdefault(LeaseId(lease_id), f"{key}: {problem}")
        if self._lease_problem is None:
            self._told = now
            return
        for lease_id in set(now) | {lid for lid, said in self._told.items() if said}:
            said = now.get(lease_id, "")
            if self._told.get(lease_id, "") != said and lease_id in state.leases:
                await self._lease_problem(lease_id, said)
        self._told = now


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)
