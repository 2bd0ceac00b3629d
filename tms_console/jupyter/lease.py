"""A lease as a notebook holds it: its endpoint, a ready Triton client, `infer`, and the tie to
the kernel that releases it when the kernel shuts down (unless kept).
"""

from __future__ import annotations

import atexit
import html
import threading
import time
from collections.abc import Mapping
from typing import Any

from tms_console.testinfer import (
    Array,
    InferResult,
    ModelSignature,
    TestInferError,
    build_inputs,
    lease_endpoint,
    lease_model,
    make_client,
    read_signature,
    send,
)
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ENDED, ClientError, TmsClient, lease_to_dict, state_name
from tms_core.units import format_duration


class NotebookLease:
    """One lease, refreshed on demand from the daemon that granted it.

    `endpoint` is the lease's HTTP address (the router's, so it outlives server moves);
    `client("http")` or `client("grpc")` is an unmodified `tritonclient` client for it;
    `infer(model, **inputs)` sends one inference and returns output name → numpy array.
    """

    def __init__(self, proto: pb.Lease, client: TmsClient, keeper: KernelLeases | None) -> None:
        self.proto = proto
        self._client = client
        self._keeper = keeper
        self._signatures: dict[tuple[str, str], ModelSignature] = {}
        # One Triton client per protocol for `infer`, kept open: a connection per call
        # would cost more than the inference of a small model.
        self._triton: dict[str, Any] = {}
        self._triton_lock = threading.Lock()

    # What the lease is

    @property
    def id(self) -> str:
        return self.proto.id

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def state(self) -> str:
        return state_name(self.proto.state)

    @property
    def reason(self) -> str:
        return self.proto.reason

    @property
    def endpoint(self) -> str:
        return self.proto.endpoints.http

    @property
    def grpc_endpoint(self) -> str:
        return self.proto.endpoints.grpc

    @property
    def models(self) -> list[str]:
        return [m.name for m in self.proto.models]

    @property
    def expires_at(self) -> float:
        return self.proto.expires_at

    @property
    def tied(self) -> bool:
        """Whether the kernel releases this lease when it shuts down."""
        return self._keeper is not None and self._keeper.holds(self.id)

    def to_dict(self) -> dict[str, Any]:
        """The same shape as `tms lease status -o json`."""
        return lease_to_dict(self.proto)

    # Talking to the daemon

    def refresh(self) -> NotebookLease:
        """Reads the lease's current state from the daemon."""
        self.proto = self._client.status(self.id)
        return self

    def wait_until_ready(self) -> NotebookLease:
        self.proto = self._client.wait_until_ready(self.id)
        return self

    def renew(self, duration_s: float = 0.0) -> NotebookLease:
        """Extends the lease by `duration_s` from now (0: its own duration)."""
        self.proto = self._client.renew(self.id, duration_s)
        return self

    def release(self, *, wait: bool = True) -> NotebookLease:
        """Releases the lease; with `wait`, returns once its models are unloaded."""
        self.proto = self._client.release(self.id, wait=wait)
        self.close()
        if self._keeper is not None:
            self._keeper.forget(self.id)
        return self

    def keep(self) -> NotebookLease:
        """Unties the lease from the kernel: it outlives the kernel until it expires."""
        if self._keeper is not None:
            self._keeper.forget(self.id)
        return self

    # Talking to Triton

    def client(self, protocol: str = "http") -> Any:
        """A ready `tritonclient.http` or `tritonclient.grpc` client for the lease's endpoint."""
        return make_client(lease_endpoint(self.proto, protocol), protocol)

    def signature(self, model: str | None = None, *, protocol: str = "http") -> ModelSignature:
        """The model's inputs and outputs as Triton declares them (read once, then kept)."""
        name = lease_model(self.proto, model)
        key = (name, protocol)
        if key not in self._signatures:
            endpoint = lease_endpoint(self.proto, protocol)
            self._signatures[key] = read_signature(endpoint, name, protocol)
        return self._signatures[key]

    def infer_result(
        self,
        model: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        *,
        protocol: str = "http",
        fill_random: bool = False,
    ) -> InferResult:
        """One inference with its inputs, outputs and latency; inputs not given are random
        with `fill_random`, and an error otherwise."""
        signature = self.signature(model, protocol=protocol)
        given = dict(inputs or {})
        missing = [s.name for s in signature.inputs if s.name not in given]
        if missing and not fill_random:
            raise TestInferError(
                f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"for model {signature.name} (it takes "
                f"{', '.join(s.describe() for s in signature.inputs)})"
            )
        arrays = build_inputs(signature, given)
        endpoint = lease_endpoint(self.proto, protocol)
        # Held for the call too: tritonclient's clients are not safe to share between
        # threads (for parallel calls, take one `client()` per thread).
        with self._triton_lock:
            client = self._triton.get(protocol)
            if client is None:
                client = self._triton[protocol] = make_client(endpoint, protocol)
            return send(endpoint, signature, arrays, protocol, client=client)

    def close(self) -> None:
        """Closes the Triton connections `infer` keeps (the lease itself is untouched)."""
        with self._triton_lock:
            clients, self._triton = list(self._triton.values()), {}
        for client in clients:
            client.close()

    def infer(
        self, model: str | None = None, /, *, protocol: str = "http", **inputs: Any
    ) -> dict[str, Array]:
        """Output name → numpy array for one inference with these inputs (numbers, lists or
        arrays; each is checked against the model's declared dtype and shape)."""
        return self.infer_result(model, inputs, protocol=protocol).outputs

    # Showing it

    def summary(self) -> str:
        label = f"{self.name} ({self.id})" if self.name else self.id
        text = f"lease {label} {self.state}"
        if self.proto.state == pb.LEASE_READY:
            text += f" at {self.endpoint} (grpc {self.grpc_endpoint})"
        elif self.reason:
            text += f": {self.reason}"
        return text

    def __repr__(self) -> str:
        models = ", ".join(self.models)
        tie = "released with the kernel" if self.tied else "kept after the kernel"
        return f"<{self.summary()}; models {models}; {tie}>"

    def _repr_html_(self) -> str:
        rows = [
            ("lease", f"{self.name} ({self.id})" if self.name else self.id),
            ("state", self.state + (f": {self.reason}" if self.reason else "")),
            ("models", ", ".join(self.models)),
            ("http", self.endpoint or "-"),
            ("grpc", self.grpc_endpoint or "-"),
            ("kernel", "released when the kernel shuts down" if self.tied else "kept"),
        ]
        if self.proto.state not in ENDED and self.expires_at:
            left = self.expires_at - time.time()
            rows.append(("expires in", format_duration(left) if left > 0 else "expired"))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='tms-lease'>{body}</table>"


class KernelLeases:
    """The leases this kernel releases when it shuts down (an `atexit` hook: a kernel that
    is killed outright cannot, and its leases then end by expiry)."""

    def __init__(self, client_factory: Any) -> None:
        self._client_factory = client_factory
        self._held: dict[str, str] = {}  # lease id → the daemon's address
        self._lock = threading.Lock()
        self._registered = False

    def tie(self, lease_id: str, target: str) -> None:
        with self._lock:
            self._held[lease_id] = target
            if not self._registered:
                atexit.register(self.release_all)
                self._registered = True

    def forget(self, lease_id: str) -> None:
        with self._lock:
            self._held.pop(lease_id, None)

    def holds(self, lease_id: str) -> bool:
        with self._lock:
            return lease_id in self._held

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def release_all(self) -> list[str]:
        """Releases every tied lease without waiting for the unloads; returns what failed."""
        with self._lock:
            held, self._held = self._held, {}
        failures = []
        for lease_id, target in held.items():
            client = self._client_factory(target)
            try:
                client.release(lease_id, wait=False)
            except ClientError as exc:
                failures.append(f"{lease_id}: {exc}")
            finally:
                client.close()
        return failures

    def unregister(self) -> None:
        if self._registered:
            atexit.unregister(self.release_all)
            self._registered = False
