"""Test inference without Triton: signatures, typed values, random inputs and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from tms_console.testinfer import (
    ModelSignature,
    TensorSpec,
    TestInferError,
    build_inputs,
    coerce_input,
    lease_endpoint,
    lease_model,
    random_input,
    read_signature,
    run_test_inference,
)
from tms_core.api import tms_pb2 as pb
from tms_core.backends.local import free_ports

VEC = TensorSpec("INPUT0", "FP32", (4,))
BATCHED = TensorSpec("IMAGE", "UINT8", (-1, 2, 2))
ADD_SUB = ModelSignature("add_sub", ("1",), "python", (VEC, TensorSpec("INPUT1", "FP32", (4,))), ())


def ready_lease(*models: str) -> pb.Lease:
    return pb.Lease(
        id="l-1",
        name="demo",
        state=pb.LEASE_READY,
        models=[pb.ModelStatus(name=m) for m in models],
        endpoints=pb.Endpoints(http="127.0.0.1:1", grpc="127.0.0.1:2"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1, 2, 3, 4", [1, 2, 3, 4]),
        ("1 2 3 4", [1, 2, 3, 4]),
        ("[1, 2, 3, 4]", [1, 2, 3, 4]),
        ("7", [7, 7, 7, 7]),
    ],
)
def test_typed_text_becomes_an_array_of_the_declared_dtype(text: str, expected: list[int]) -> None:
    array = coerce_input(VEC, text)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.array(expected, dtype=np.float32))


def test_python_values_fit_the_shape_and_get_a_batch_dimension() -> None:
    array = coerce_input(BATCHED, [[1, 2], [3, 4]])
    assert array.shape == (1, 2, 2) and array.dtype == np.uint8
    assert coerce_input(BATCHED, np.zeros((3, 2, 2))).shape == (3, 2, 2)
    flat = coerce_input(TensorSpec("M", "INT32", (2, 2)), "1, 2, 3, 4")
    np.testing.assert_array_equal(flat, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (VEC, "1, 2, 3", r"INPUT0: expected shape INPUT0 FP32\[4\], got \[3\]"),
        (VEC, "1, two, 3, 4", r"INPUT0: 'two' is not a FP32 value"),
        (VEC, "", r"INPUT0: no value given \(expected INPUT0 FP32\[4\]\)"),
        (VEC, "[1, 2", r"INPUT0: not a JSON list"),
        (VEC, [[1, 2], [3]], r"INPUT0: the rows have different lengths"),
        (VEC, ["a", "b", "c", "d"], r"INPUT0: expected FP32 numbers"),
        (BATCHED, [[300, 0], [0, 0]], r"IMAGE: values must lie in 0\.\.255 \(UINT8\)"),
        (BATCHED, [[1.5, 0], [0, 0]], r"IMAGE: expected whole numbers \(UINT8\)"),
        (TensorSpec("FLAG", "BOOL", (2,)), [0, 2], r"FLAG: expected true/false \(BOOL\)"),
    ],
)
def test_values_that_do_not_fit_name_the_input(
    spec: TensorSpec, value: object, message: str
) -> None:
    with pytest.raises(TestInferError, match=message):
        coerce_input(spec, value)


def test_bytes_and_bool_inputs() -> None:
    text = TensorSpec("TEXT", "BYTES", (-1,))
    np.testing.assert_array_equal(coerce_input(text, "hello"), np.array([b"hello"], dtype=object))
    np.testing.assert_array_equal(
        coerce_input(text, '["a", "b"]'), np.array([b"a", b"b"], dtype=object)
    )
    flags = coerce_input(TensorSpec("FLAG", "BOOL", (3,)), "true, false, true")
    assert flags.dtype == bool and flags.tolist() == [True, False, True]


@pytest.mark.parametrize(
    "datatype", ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]
)
def test_random_inputs_have_the_declared_dtype_and_free_dimensions_of_one(datatype: str) -> None:
    spec = TensorSpec("X", datatype, (-1, 3))
    array = random_input(spec, np.random.default_rng(1))
    assert array.shape == (1, 3)
    if datatype == "BYTES":
        assert array.dtype == object and isinstance(array[0, 0], bytes)
    else:
        assert array.dtype == coerce_input(spec, [[1, 0, 1]]).dtype


def test_build_inputs_mixes_given_and_random_values_and_refuses_unknown_names() -> None:
    inputs = build_inputs(ADD_SUB, {"INPUT0": "1, 2, 3, 4"}, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(inputs["INPUT0"], [1, 2, 3, 4])
    assert inputs["INPUT1"].shape == (4,) and inputs["INPUT1"].dtype == np.float32
    with pytest.raises(
        TestInferError, match="unknown input 'INPUT9'; model add_sub takes INPUT0, INPUT1"
    ):
        build_inputs(ADD_SUB, {"INPUT9": 1})


def test_the_lease_must_be_ready_and_the_model_in_it() -> None:
    lease = ready_lease("add_sub", "blob_classifier")
    assert lease_endpoint(lease, "grpc") == "127.0.0.1:2"
    with pytest.raises(TestInferError, match="protocol: expected http or grpc, got 'udp'"):
        lease_endpoint(lease, "udp")
    with pytest.raises(TestInferError, match="holds add_sub, blob_classifier: name the model"):
        lease_model(lease, None)
    with pytest.raises(TestInferError, match="model 'resnet' is not in lease demo"):
        lease_model(lease, "resnet")
    assert lease_model(ready_lease("add_sub"), None) == "add_sub"
    lease.state = pb.LEASE_LOADING
    with pytest.raises(TestInferError, match="lease demo is LOADING, not READY"):
        run_test_inference(lease, "add_sub")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_unreachable_triton_is_a_one_line_error(protocol: str) -> None:
    endpoint = f"127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(TestInferError) as caught:
        read_signature(endpoint, "add_sub", protocol, timeout=2)
    message = str(caught.value)
    assert message.startswith(f"could not read model 'add_sub' metadata from {endpoint}: ")
    assert "\n" not in message
