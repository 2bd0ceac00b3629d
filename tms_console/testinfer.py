"""Test inference against a READY lease, shared by the console and the Jupyter extension.

Reads the model's signature from Triton through the lease's own endpoint, builds inputs of
the declared dtype and shape (random, or values a person typed), sends them with an
unmodified `tritonclient` (HTTP or gRPC) and returns the outputs with the measured latency.
No UI imports: the callers render the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import state_name

PROTOCOLS = ("http", "grpc")
DEFAULT_TIMEOUT_S = 30.0

# Ranges of the integer types a typed value must fit (numpy would wrap silently).
_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOATS = ("FP16", "FP32", "FP64", "BF16")

Array = npt.NDArray[Any]


class TestInferError(Exception):
    """A test inference that could not be made, with a one-line message fit to show."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton declares it; -1 in `shape` is a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name} {self.datatype}[{dims}]"

    def concrete_shape(self) -> tuple[int, ...]:
        """The shape with each free dimension set to 1: what a random input uses."""
        return tuple(1 if d < 0 else d for d in self.shape)


@dataclass(frozen=True)
class ModelSignature:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        names = ", ".join(s.name for s in self.inputs) or "no inputs"
        raise TestInferError(f"unknown input {name!r}; model {self.name} takes {names}")


@dataclass(frozen=True)
class InferResult:
    model: str
    protocol: str
    endpoint: str
    inputs: dict[str, Array]
    outputs: dict[str, Array]
    latency_s: float


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise TestInferError(f"protocol: expected http or grpc, got {protocol!r}")
    return protocol


def _module(protocol: str) -> Any:
    check_protocol(protocol)
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


def make_client(
    endpoint: str, protocol: str = "http", *, timeout: float = DEFAULT_TIMEOUT_S
) -> Any:
    """A ready `tritonclient` client (http or grpc) for `endpoint` (`host:port`)."""
    module = _module(protocol)
    if protocol == "http":
        return module.InferenceServerClient(
            endpoint, connection_timeout=timeout, network_timeout=timeout
        )
    return module.InferenceServerClient(endpoint)


def lease_endpoint(lease: pb.Lease, protocol: str = "http") -> str:
    """The lease's own address for `protocol`; the lease must be READY."""
    check_protocol(protocol)
    if lease.state != pb.LEASE_READY:
        raise TestInferError(
            f"lease {lease.name or lease.id} is {state_name(lease.state)}, not READY"
        )
    endpoint = lease.endpoints.http if protocol == "http" else lease.endpoints.grpc
    if not endpoint:
        raise TestInferError(f"lease {lease.name or lease.id} has no {protocol} endpoint")
    return endpoint


def lease_model(lease: pb.Lease, model: str | None) -> str:
    """The model to test: the one named (it must be in the lease) or the lease's only one."""
    names = [m.name for m in lease.models]
    if model:
        if model not in names:
            raise TestInferError(
                f"model {model!r} is not in lease {lease.name or lease.id} "
                f"(it holds {', '.join(names)})"
            )
        return model
    if len(names) != 1:
        raise TestInferError(
            f"lease {lease.name or lease.id} holds {', '.join(names)}: name the model to test"
        )
    return names[0]


def _error_text(exc: Exception) -> str:
    # tritonclient's InferenceServerException keeps the server's message apart.
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def _tensors(items: Any) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t.get("shape", [])))
        for t in items or []
    )


def read_signature(
    endpoint: str, model: str, protocol: str = "http", *, timeout: float = DEFAULT_TIMEOUT_S
) -> ModelSignature:
    """The model's inputs and outputs as the Triton behind `endpoint` declares them."""
    client = make_client(endpoint, protocol, timeout=timeout)
    try:
        if protocol == "http":
            meta = client.get_model_metadata(model)
        else:
            meta = client.get_model_metadata(model, as_json=True, client_timeout=timeout)
    except Exception as exc:
        raise TestInferError(
            f"could not read model {model!r} metadata from {endpoint}: {_error_text(exc)}"
        ) from None
    finally:
        client.close()
    return ModelSignature(
        name=str(meta.get("name", model)),
        versions=tuple(str(v) for v in meta.get("versions", [])),
        platform=str(meta.get("platform", "")),
        inputs=_tensors(meta.get("inputs")),
        outputs=_tensors(meta.get("outputs")),
    )


def numpy_dtype(datatype: str) -> Any:
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise TestInferError(f"datatype {datatype} is not supported for test inference")
    return dtype


def random_input(spec: TensorSpec, rng: np.random.Generator | None = None) -> Array:
    """Random values of the declared dtype and shape (free dimensions set to 1)."""
    rng = rng or np.random.default_rng()
    shape = spec.concrete_shape()
    if spec.datatype == "BYTES":
        words = rng.integers(0, 10_000, size=shape)
        text = np.empty(shape, dtype=object)
        text.flat[:] = [f"tms-{w}".encode() for w in words.flat]
        return text
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if spec.datatype in _INT_RANGES:
        low, high = _INT_RANGES[spec.datatype]
        # Small values: a test inference should not overflow the model's arithmetic.
        return rng.integers(max(low, -100), min(high, 100) + 1, size=shape).astype(
            numpy_dtype(spec.datatype)
        )
    if spec.datatype in _FLOATS:
        return rng.random(size=shape).astype(numpy_dtype(spec.datatype))
    raise TestInferError(f"{spec.name}: datatype {spec.datatype} is not supported")


def _parse_text(spec: TensorSpec, text: str) -> Any:
    stripped = text.strip()
    if not stripped:
        raise TestInferError(f"{spec.name}: no value given (expected {spec.describe()})")
    if spec.datatype == "BYTES":
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise TestInferError(f"{spec.name}: not a JSON list: {exc.msg}") from None
        return [stripped]
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise TestInferError(f"{spec.name}: not a JSON list: {exc.msg}") from None
    parts = stripped.replace(",", " ").split()
    values: list[Any] = []
    for part in parts:
        try:
            values.append(json.loads(part.lower()) if spec.datatype == "BOOL" else float(part))
        except (ValueError, json.JSONDecodeError):
            raise TestInferError(f"{spec.name}: {part!r} is not a {spec.datatype} value") from None
    return values


def _fit_shape(spec: TensorSpec, array: Array) -> Array:
    shape = spec.shape
    if array.size == 1:
        # One value fills the whole tensor (free dimensions taken as 1).
        return np.broadcast_to(array.reshape(()), spec.concrete_shape()).copy()
    if array.ndim == len(shape) - 1 and shape and shape[0] < 0:
        array = array.reshape((1, *array.shape))  # the batch dimension, added for the user
    if array.ndim == 1 and len(shape) > 1 and all(d >= 0 for d in shape):
        if array.size == int(np.prod(shape)):
            array = array.reshape(shape)  # a flat list of exactly the right count
    fits = array.ndim == len(shape) and all(
        want < 0 or want == got for want, got in zip(shape, array.shape, strict=True)
    )
    if not fits:
        got = "[" + ", ".join(str(d) for d in array.shape) + "]"
        raise TestInferError(f"{spec.name}: expected shape {spec.describe()}, got {got}")
    return array


def coerce_input(spec: TensorSpec, value: Any) -> Array:
    """`value` (a number, a list, an array, or text typed by a person) as the input's array.

    Text is a JSON list (`[[1, 2], [3, 4]]`) or numbers separated by commas or spaces; a
    single value fills the whole shape. Raises `TestInferError` naming the input when the
    value does not fit its dtype or shape."""
    if isinstance(value, str):
        value = _parse_text(spec, value)
    dtype = numpy_dtype(spec.datatype)
    if spec.datatype == "BYTES":
        raw = np.asarray(value, dtype=object)
        array = (
            np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode(), otypes=[object])(
                raw
            )
            if raw.size
            else raw
        )
        return _fit_shape(spec, np.asarray(array, dtype=object))
    try:
        raw = np.asarray(value)
    except ValueError:
        raise TestInferError(f"{spec.name}: the rows have different lengths") from None
    if raw.dtype == object or raw.dtype.kind in "USV":
        raise TestInferError(f"{spec.name}: expected {spec.datatype} numbers, got {value!r}")
    if spec.datatype == "BOOL":
        if raw.dtype.kind != "b" and not np.isin(raw, (0, 1)).all():
            raise TestInferError(f"{spec.name}: expected true/false (BOOL), got {value!r}")
        return _fit_shape(spec, raw.astype(bool))
    if spec.datatype in _INT_RANGES:
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
            raise TestInferError(f"{spec.name}: expected whole numbers ({spec.datatype})")
        low, high = _INT_RANGES[spec.datatype]
        if raw.size and (raw.min() < low or raw.max() > high):
            raise TestInferError(f"{spec.name}: values must lie in {low}..{high} ({spec.datatype})")
        return _fit_shape(spec, raw.astype(dtype))
    if spec.datatype in _FLOATS:
        if raw.dtype.kind not in "biuf":
            raise TestInferError(f"{spec.name}: expected {spec.datatype} numbers")
        return _fit_shape(spec, raw.astype(dtype))
    raise TestInferError(f"{spec.name}: datatype {spec.datatype} is not supported")


def build_inputs(
    signature: ModelSignature,
    values: Mapping[str, Any] | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> dict[str, Array]:
    """An array for every input: the given value where there is one, random otherwise."""
    values = dict(values or {})
    for name in values:
        signature.input(name)  # refuses names the model does not take
    rng = rng or np.random.default_rng()
    return {
        spec.name: coerce_input(spec, values[spec.name])
        if spec.name in values and values[spec.name] is not None
        else random_input(spec, rng)
        for spec in signature.inputs
    }


def send(
    endpoint: str,
    signature: ModelSignature,
    inputs: Mapping[str, Array],
    protocol: str = "http",
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    client: Any = None,
) -> InferResult:
    """One inference with `inputs`; the latency is the round trip of the infer call alone.

    `client` (a `make_client` client for `endpoint`) is used and left open, for callers that
    send many; without it, a client is made for this call and closed after it."""
    module = _module(protocol)
    tensors = []
    for spec in signature.inputs:
        array = inputs[spec.name]
        tensor = module.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = [module.InferRequestedOutput(o.name) for o in signature.outputs]
    owned = client is None
    if owned:
        client = make_client(endpoint, protocol, timeout=timeout)
    try:
        options: dict[str, Any] = {} if protocol == "http" else {"client_timeout": timeout}
        started = time.perf_counter()
        response = client.infer(signature.name, tensors, outputs=requested, **options)
        latency = time.perf_counter() - started
    except Exception as exc:
        raise TestInferError(
            f"inference on {signature.name} at {endpoint} failed: {_error_text(exc)}"
        ) from None
    finally:
        if owned:
            client.close()
    outputs = {o.name: response.as_numpy(o.name) for o in signature.outputs}
    return InferResult(
        model=signature.name,
        protocol=protocol,
        endpoint=endpoint,
        inputs=dict(inputs),
        outputs=outputs,
        latency_s=latency,
    )


def run_test_inference(
    lease: pb.Lease,
    model: str | None = None,
    values: Mapping[str, Any] | None = None,
    *,
    protocol: str = "http",
    timeout: float = DEFAULT_TIMEOUT_S,
    rng: np.random.Generator | None = None,
) -> InferResult:
    """The whole test inference on a READY lease: signature, inputs, one call."""
    endpoint = lease_endpoint(lease, protocol)
    name = lease_model(lease, model)
    signature = read_signature(endpoint, name, protocol, timeout=timeout)
    inputs = build_inputs(signature, values, rng=rng)
    return send(endpoint, signature, inputs, protocol, timeout=timeout)
