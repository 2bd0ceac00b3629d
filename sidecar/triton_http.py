"""Triton's HTTP health and repository API, on the standard library alone.

The sidecar is on the critical path of a cold lease (it starts beside tritonserver), so it
avoids tritonclient's heavy imports; the calls are blocking and run in worker threads.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


class TritonError(Exception):
    pass


@dataclass(frozen=True)
class IndexEntry:
    name: str
    state: str
    reason: str


class TritonHttp:
    def __init__(self, address: str, *, timeout: float = 600.0) -> None:
        host, _, port = address.rpartition(":")
        self._host = host
        self._port = int(port)
        self._timeout = timeout

    def _request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            status, _ = self._request("GET", "/v2/health/ready")
        except OSError:
            return False
        return status == 200

    def load(self, name: str) -> None:
        status, body = self._request("POST", f"/v2/repository/models/{name}/load")
        if status != 200:
            raise TritonError(_error_text(body) or f"HTTP {status}")

    def unload(self, name: str) -> None:
        status, body = self._request("POST", f"/v2/repository/models/{name}/unload")
        if status != 200:
            raise TritonError(_error_text(body) or f"HTTP {status}")

    def stats(self) -> dict[str, tuple[int, int]]:
        """Model name -> (successful inferences, last inference in ms since the epoch)."""
        status, body = self._request("GET", "/v2/models/stats")
        if status != 200:
            raise TritonError(_error_text(body) or f"HTTP {status}")
        result: dict[str, tuple[int, int]] = {}
        for entry in json.loads(body).get("model_stats", []):
            count = int(entry.get("inference_stats", {}).get("success", {}).get("count", 0))
            last = int(entry.get("last_inference", 0))
            name = str(entry.get("name", ""))
            previous = result.get(name, (0, 0))
            # Several versions of one model add up; the latest inference of any counts.
            result[name] = (previous[0] + count, max(previous[1], last))
        return result

    def index(self) -> list[IndexEntry]:
        status, body = self._request("POST", "/v2/repository/index", b"{}")
        if status != 200:
            raise TritonError(_error_text(body) or f"HTTP {status}")
        entries: list[dict[str, Any]] = json.loads(body)
        return [IndexEntry(e["name"], e.get("state", ""), e.get("reason", "")) for e in entries]


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", "")).strip()
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()
