"""Small helpers for talking to a real Triton in integration tests."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import EXAMPLES
from tms_core.lease_request import ModelRequest


def example(name: str, memory: int = 0) -> ModelRequest:
    return ModelRequest(name, (EXAMPLES / name).as_uri(), memory)


def index(http_endpoint: str) -> dict[str, str]:
    """Triton's repository index: model name -> state."""
    client = httpclient.InferenceServerClient(http_endpoint)
    try:
        return {m["name"]: m.get("state", "") for m in client.get_model_repository_index()}
    finally:
        client.close()


def refuses(http_endpoint: str) -> bool:
    client = httpclient.InferenceServerClient(http_endpoint, connection_timeout=1.0)
    try:
        client.is_server_live()
    except Exception:
        return True
    finally:
        client.close()
    return False


def _add_sub(
    protocol: Any, endpoint: str, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """add_sub through an unmodified tritonclient (its `http` or `grpc` module)."""
    client = protocol.InferenceServerClient(endpoint)
    try:
        inputs = [
            protocol.InferInput("INPUT0", [4], "FP32"),
            protocol.InferInput("INPUT1", [4], "FP32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs)
        return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    finally:
        client.close()


def add_sub_http(endpoint: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _add_sub(httpclient, endpoint, a, b)


def add_sub_grpc(endpoint: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _add_sub(grpcclient, endpoint, a, b)


def broken_model(root: Path, name: str = "broken") -> ModelRequest:
    """A Python-backend model whose initialize() raises: Triton accepts it and fails the load."""
    model = root / name
    shutil.copytree(EXAMPLES / "add_sub", model)
    (model / "config.pbtxt").write_text(
        (model / "config.pbtxt").read_text().replace('name: "add_sub"', f'name: "{name}"')
    )
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights are corrupt')\n"
    )
    return ModelRequest(name, model.as_uri())


def copied_model(root: Path, name: str, memory: int) -> ModelRequest:
    """`add_sub` under another name: a model no lease holds yet."""
    model = root / name
    shutil.copytree(EXAMPLES / "add_sub", model)
    config = (model / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(config.replace('name: "add_sub"', f'name: "{name}"'))
    return ModelRequest(name, model.as_uri(), memory)


class Traffic:
    """A thread calling add_sub through each address in turn, a new connection per call, as
    long as it runs; it records every answer and every failure (with its time)."""

    def __init__(self, http: list[str], grpc: list[str] | None = None) -> None:
        self.calls = [(add_sub_http, a) for a in http] + [(add_sub_grpc, a) for a in grpc or []]
        self.answered = 0
        self.failures: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        a = np.array([1, 2, 3, 4], dtype=np.float32)
        while not self._stop.is_set():
            for call, address in self.calls:
                try:
                    total, _ = call(address, a, a)
                    assert np.allclose(total, a + a), total
                    self.answered += 1
                except Exception as exc:  # every kind of failure is recorded
                    self.failures.append((time.monotonic(), address, repr(exc)[:300]))
