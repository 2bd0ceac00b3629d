"""The sidecars' credential Secrets on Kubernetes (one per server, created before its
Deployment, deleted with it, and pruned when the state no longer runs the server), the
activator's token Secret, and the reads the switch to the activator needs (its pods, the
ports given out).

Calls the API through the adapter's helpers (`kubernetes.py` owns the client), so this module
imports no `kubernetes`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tms_core.backends import kubernetes_activator as activator
from tms_core.backends import kubernetes_objects as objects
from tms_core.backends.kubernetes_status import KubernetesApiError
from tms_core.config import KubernetesSettings
from tms_core.domain import PublishedState, Server
from tms_core.ids import LeaseId, ServerId

log = logging.getLogger("tms_core.backends.kubernetes")

Call = Callable[..., Awaitable[Any]]
TOKEN_KEY = "token"
"""The activator's token file is this key of its Secret (`--token-file`, activator.yaml)."""
MERGE_PATCH = "application/merge-patch+json"
List = Callable[[str, Callable[..., Any], str], Awaitable[list[Any]]]


class SidecarSecrets:
    def __init__(
        self,
        *,
        call: Call,
        list_: List,
        delete: Callable[[str, str, Callable[..., Any]], Awaitable[None]],
        core: Any,
        namespace: str,
        settings: KubernetesSettings,
        credential: Callable[[str], str] | None,
    ) -> None:
        self._call, self._list, self._delete = call, list_, delete
        self._core = core
        self._namespace = namespace
        self._settings = settings
        self._credential = credential

    async def create(self, server: Server) -> None:
        if self._credential is None:
            return
        secret = objects.sidecar_secret(
            server,
            self._credential(server.id),
            namespace=self._namespace,
            settings=self._settings,
        )
        try:
            await self._call(
                f"creating Secret {secret['metadata']['name']}",
                self._core.create_namespaced_secret,
                namespace=self._namespace,
                body=secret,
            )
        except KubernetesApiError as exc:
            # Left by an earlier start of this server: the credential is the same.
            if exc.status != 409:
                raise

    async def delete(self, server_id: ServerId) -> None:
        if self._credential is not None:
            await self._delete(
                "Secret", objects.secret_name(server_id), self._core.delete_namespaced_secret
            )

    async def listed(self) -> dict[ServerId, str]:
        """The sidecar credential Secrets the daemon made, by server (name by server id)."""
        if self._credential is None:
            return {}
        try:
            items = await self._list(
                "Secrets", self._core.list_namespaced_secret, objects.managed_selector("server")
            )
        except KubernetesApiError as exc:
            log.warning("%s", exc)
            return {}
        found: dict[ServerId, str] = {}
        for item in items:
            metadata = item.get("metadata", {})
            server_id = (metadata.get("labels") or {}).get(objects.SERVER_LABEL)
            if server_id and metadata.get("name"):
                found[ServerId(server_id)] = metadata["name"]
        return found

    async def prune(self, secrets: dict[ServerId, str], state: PublishedState) -> None:
        """Deletes the credential Secrets of servers the state no longer runs (a stop whose
        delete failed, a server removed while the daemon was down): a credential outliving its
        server is one more secret to leak, and good for a server id nobody uses."""
        alive = {sid for sid, s in state.servers.items() if s.state.alive}
        for server_id, name in sorted(secrets.items()):
            if server_id in alive:
                continue
            try:
                await self._delete("Secret", name, self._core.delete_namespaced_secret)
                log.info("deleted Secret %s (a server the daemon does not hold)", name)
            except KubernetesApiError as exc:
                log.warning("%s", exc)


class ActivatorTokenSecret:
    """The Secret the activator reads its token from (`activator_token_secret`, key `token`):
    read by name, created or patched. The daemon's Role may get and patch that Secret only
    (manifests/base/role.yaml names it)."""

    def __init__(
        self, *, call: Call, core: Any, namespace: str, settings: KubernetesSettings
    ) -> None:
        self._call, self._core = call, core
        self._namespace, self._settings = namespace, settings
        self.name = settings.activator_token_secret if settings.activator_selector else ""
        """"": no activator, or the operator keeps the Secret; the daemon leaves it alone."""

    async def read(self) -> str | None:
        """The token the Secret holds; None when there is no Secret or no token in it."""
        try:
            found = await self._call(
                f"reading Secret {self.name}",
                self._core.read_namespaced_secret,
                name=self.name,
                namespace=self._namespace,
            )
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (found.get("data") or {}).get(TOKEN_KEY, "")
        try:
            return base64.b64decode(encoded, validate=True).decode().strip() or None
        except (binascii.Error, UnicodeDecodeError):
            return None

    async def write(self, token: str) -> None:
        """Creates the Secret holding `token`, or replaces the token of the one there."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": objects.object_metadata(
                self.name, self._namespace, self._settings, "activator"
            ),
            "type": "Opaque",
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
        }
        try:
            await self._call(
                f"creating Secret {self.name}",
                self._core.create_namespaced_secret,
                namespace=self._namespace,
                body=body,
            )
            return
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise
        await self._call(
            f"updating Secret {self.name}",
            self._core.patch_namespaced_secret,
            name=self.name,
            namespace=self._namespace,
            body={"metadata": {"labels": body["metadata"]["labels"]}, "data": body["data"]},
            _content_type=MERGE_PATCH,
        )


class ActivatorReader:
    """The activator's pods, and each parkable lease's ports there (kept in its routes
    ConfigMap, so a restarted daemon gives a lease the ports it had)."""

    def __init__(self, *, list_: List, core: Any, settings: KubernetesSettings) -> None:
        self._list = list_
        self._core = core
        self._settings = settings
        self._pods: list[activator.ActivatorPod] = []
        self._ports: dict[LeaseId, activator.Ports] | None = None

    async def read(self, state: PublishedState) -> activator.Activator | None:
        """None: no activator configured, or its ports not read yet (none is given twice)."""
        if not self._settings.activator_selector:
            return None
        try:
            pods = await self._list(
                "activator pods", self._core.list_namespaced_pod, self._settings.activator_selector
            )
            self._pods = [p for p in map(activator.activator_pod, pods) if p is not None]
            if self._ports is None:
                maps = await self._list(
                    "ConfigMaps",
                    self._core.list_namespaced_config_map,
                    objects.managed_selector("activator"),
                )
                name = self._settings.activator_routes
                self._ports = activator.ports_in(
                    next((m for m in maps if m["metadata"]["name"] == name), None)
                )
        except KubernetesApiError as exc:
            log.warning("%s", exc)
            if self._ports is None:
                return None
        self._ports = activator.assign_ports(
            self._ports, state.leases.values(), self._settings.activator_first_port
        )
        return activator.Activator(self._pods, self._ports)
