"""A Kubernetes API stand-in: kmock's emulator, speaking the real HTTP API on 127.0.0.1.

kmock keeps objects as JSON and serves create, get, list, watch, patch and delete. This adds
what the backend relies on and kmock lacks (test-stack.md): label selectors on lists and
watches, PUT (replace), the namespace (and a uid, resourceVersion and creationTimestamp) on
created objects, `kind`/`apiVersion` on lists, and injected faults (an HTTP status or a
stall) for the error tests. There are no controllers: no pods appear unless a test writes
them, as a kubelet would.

It runs in a thread with its own event loop, so the daemon's blocking client (in its worker
threads) and the tests' own reads both reach it while the test's loop runs.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

SELECTOR_TERM = re.compile(
    r"^\s*(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_selector(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (equality, set-based, existence)."""
    for term in _split_selector(selector):
        m = SELECTOR_TERM.match(term)
        if m is None:
            raise ValueError(f"bad label selector term {term!r}")
        key = m["key"]
        if m["op"] in ("=", "=="):
            ok = labels.get(key) == m["value"]
        elif m["op"] == "!=":
            ok = labels.get(key) != m["value"]
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",")}
            ok = (
                (labels.get(key) in values)
                if m["setop"] == "in"
                else (labels.get(key) not in values)
            )
        else:
            ok = (key in labels) != bool(m["neg"])
        if not ok:
            return False
    return True


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int  # 0: stall for `stall_s` instead of answering
    times: int = 1
    stall_s: float = 0.0


KINDS = {
    "deployments": ("apps/v1", "Deployment"),
    "services": ("v1", "Service"),
    "pods": ("v1", "Pod"),
    "nodes": ("v1", "Node"),
    "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"),
    "configmaps": ("v1", "ConfigMap"),
}
REASONS = {
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    422: "Invalid",
    500: "InternalError",
}


class StandIn(kmock.KubernetesEmulator):  # type: ignore[misc]
    faults: list[Fault]

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.faults = []
        self.calls: list[tuple[str, str, str]] = []

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        path = request.url.path
        method = str(request.method.value if hasattr(request.method, "value") else request.method)
        method = method.upper()
        # Calls from the kubernetes client (the daemon), not the tests' own plain HTTP.
        if request.resource is not None and "urllib" not in request.headers.get("User-Agent", ""):
            self.calls.append(
                (request.resource.group or "", request.resource.plural, _verb(method, request))
            )
        for fault in list(self.faults):
            if fault.method == method and fault.path.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                if fault.status == 0:
                    await asyncio.sleep(fault.stall_s)
                    return aiohttp.web.Response(status=504)
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "metadata": {},
                        "status": "Failure",
                        "code": fault.status,
                        "reason": REASONS.get(fault.status, "Unknown"),
                        "message": f"injected {fault.status} for {method} {path}",
                    },
                    status=fault.status,
                )
        if request.resource is not None and method == "POST" and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        if request.resource is not None and method == "PUT" and request.name:
            return await self._replace(request)
        return await super()._handle(request)

    async def _replace(self, request: Any) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response(
                    {"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"},
                    status=404,
                )
            old = self._objects[key].raw
            data = dict(request.data)
            meta = data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta["uid"] = old.get("metadata", {}).get("uid")
            meta["resourceVersion"] = str(
                int(old.get("metadata", {}).get("resourceVersion", "1")) + 1
            )
            self._objects[key].delete()
            self._objects[key].create(data)
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _serve_list(self, request: Any) -> Any:
        answer = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        if selector:
            answer["items"] = [
                item
                for item in answer["items"]
                if matches(selector, item.get("metadata", {}).get("labels") or {})
            ]
        api_version, kind = KINDS.get(request.resource.plural, ("v1", "List"))
        answer["apiVersion"], answer["kind"] = api_version, f"{kind}List"
        return answer

    async def _serve_watch(self, request: Any) -> Any:
        selector = request.params.get("labelSelector", "")
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and selector:
                labels = event.get("object", {}).get("metadata", {}).get("labels") or {}
                if not matches(selector, labels):
                    continue
            yield event


def _verb(method: str, request: Any) -> str:
    if method == "GET":
        if request.params.get("watch") == "true":
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


class Cluster:
    """The stand-in, running; its objects readable and writable from the test's thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.handler: StandIn | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kube-standin", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        handler = StandIn()
        handler.resources.load_bundled()
        handler.fallback << 404
        async with handler, kmock.Server(handler) as server:
            self.handler = handler
            self.url = f"http://{server.host}:{server.port}"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes stand-in did not start")
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def calls(self) -> list[tuple[str, str, str]]:
        assert self.handler is not None
        return list(self.handler.calls)

    def fail(
        self, method: str, path: str, status: int, *, times: int = 1, stall_s: float = 0.0
    ) -> None:
        """The next `times` `method` requests whose path matches `path` get `status` (0:
        no answer for `stall_s` seconds)."""
        assert self.handler is not None
        self.handler.faults.append(Fault(method, re.compile(path), status, times, stall_s))

    def objects(self, plural: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Live objects of a resource (`services`, `deployments`…) by name."""

        async def read() -> dict[str, dict[str, Any]]:
            assert self.handler is not None
            found = {}
            for (resource, ns, name), obj in self.handler.objects.items():
                if resource.plural == plural and not obj.deleted and namespace in (None, ns):
                    found[name] = json.loads(json.dumps(obj.raw))
            return found

        result: dict[str, dict[str, Any]] = self._on_loop(read())
        return result

    def kubeconfig(self, path: Path, namespace: str = "tms") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test"}}],
                    "contexts": [
                        {
                            "name": "standin",
                            "context": {
                                "cluster": "standin",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "standin",
                }
            )
        )
        return path


def running_cluster() -> Iterator[Cluster]:
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


def api_request(cluster: Cluster, method: str, path: str, body: Any = None) -> Any:
    """One plain HTTP call to the stand-in, as kubectl or a kubelet would make it."""
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        cluster.url + path,
        data=data,
        method=method,
        headers={
            "Content-Type": "application/merge-patch+json"
            if method == "PATCH"
            else "application/json"
        },
    )
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read() or b"{}")
