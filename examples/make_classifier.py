"""Train the ``blob_classifier`` example model and write it out as ONNX.

The model is a tiny multi-layer perceptron (4 inputs -> 16 ReLU units -> 3-way
softmax) that says which of three Gaussian blobs a 4-feature point came from.
It is a real trained classifier, small enough to commit (a few KB), and it
needs nothing from the network: the training data is synthetic and drawn from
a fixed seed, so this script rebuilds the committed ``model.onnx`` byte for
byte, and a unit test holds the two together.

The blobs have standard deviation 1 and these centers (``CLASS_CENTERS``):

* class 0: (0, 0, 0, 0)
* class 1: (4, 4, 0, 0)
* class 2: (0, 4, 4, 4)

Training is plain full-batch gradient descent on softmax cross-entropy, in
numpy.  It runs in float64 and the weights are rounded to ``WEIGHT_DECIMALS``
places before they are stored as float32: BLAS and numpy's SIMD kernels may
sum in a different order on another CPU, and the rounding keeps those
last-bit differences from reaching the file.

Usage::

    python examples/make_classifier.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "examples" / "models" / "blob_classifier" / "1" / "model.onnx"

CLASS_CENTERS: NDArray[np.float64] = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [4.0, 4.0, 0.0, 0.0],
        [0.0, 4.0, 4.0, 4.0],
    ]
)
NUM_FEATURES = 4
NUM_HIDDEN = 16
NUM_CLASSES = 3
SAMPLES_PER_CLASS = 200
BLOB_STD = 1.0
SEED = 20240601
EPOCHS = 500
LEARNING_RATE = 0.2
WEIGHT_DECIMALS = 4

# ONNX Runtime rejects models whose IR version is newer than it knows; 9 (ONNX
# 1.15) is read by every onnxruntime release that supports opset 17.
OPSET = 17
IR_VERSION = 9
PRODUCER_NAME = "tms-examples"

Array = NDArray[np.float64]


def make_dataset(seed: int = SEED) -> tuple[Array, NDArray[np.int64]]:
    """Return ``(features, labels)``: ``SAMPLES_PER_CLASS`` points per blob."""
    rng = np.random.default_rng(seed=seed)
    features = []
    labels = []
    for label, center in enumerate(CLASS_CENTERS):
        features.append(rng.normal(center, BLOB_STD, size=(SAMPLES_PER_CLASS, NUM_FEATURES)))
        labels.append(np.full(SAMPLES_PER_CLASS, label, dtype=np.int64))
    return np.concatenate(features), np.concatenate(labels)


def softmax(logits: Array) -> Array:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: Array = exp / exp.sum(axis=1, keepdims=True)
    return result


def forward(params: dict[str, Array], x: Array) -> tuple[Array, Array]:
    """Return ``(hidden activations, class probabilities)``."""
    hidden = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return hidden, softmax(hidden @ params["w2"] + params["b2"])


def train(x: Array, y: NDArray[np.int64], seed: int = SEED) -> dict[str, Array]:
    """Fit the MLP by full-batch gradient descent; return its weights."""
    rng = np.random.default_rng(seed=seed + 1)
    params: dict[str, Array] = {
        # He initialisation for the ReLU layer, Glorot-ish for the output layer.
        "w1": rng.normal(0.0, np.sqrt(2.0 / NUM_FEATURES), size=(NUM_FEATURES, NUM_HIDDEN)),
        "b1": np.zeros(NUM_HIDDEN),
        "w2": rng.normal(0.0, np.sqrt(1.0 / NUM_HIDDEN), size=(NUM_HIDDEN, NUM_CLASSES)),
        "b2": np.zeros(NUM_CLASSES),
    }
    one_hot = np.eye(NUM_CLASSES)[y]
    n = x.shape[0]
    for _ in range(EPOCHS):
        hidden, probs = forward(params, x)
        d_logits = (probs - one_hot) / n
        d_hidden = (d_logits @ params["w2"].T) * (hidden > 0.0)
        grads = {
            "w2": hidden.T @ d_logits,
            "b2": d_logits.sum(axis=0),
            "w1": x.T @ d_hidden,
            "b1": d_hidden.sum(axis=0),
        }
        for name, grad in grads.items():
            params[name] = params[name] - LEARNING_RATE * grad
    return {name: np.round(value, WEIGHT_DECIMALS) for name, value in params.items()}


def accuracy(params: dict[str, Array], x: Array, y: NDArray[np.int64]) -> float:
    _, probs = forward(params, x)
    return float(np.mean(probs.argmax(axis=1) == y))


def to_onnx(params: dict[str, Array]) -> onnx.ModelProto:
    """Build Gemm -> Relu -> Gemm -> Softmax with the weights as initializers."""
    initializers = [
        numpy_helper.from_array(params[name].astype(np.float32), name=name)
        for name in ("w1", "b1", "w2", "b2")
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["hidden_linear"], name="fc1"),
        helper.make_node("Relu", ["hidden_linear"], ["hidden"], name="relu1"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "blob_classifier",
        inputs=[
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", NUM_FEATURES])
        ],
        outputs=[
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", NUM_CLASSES]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name=PRODUCER_NAME,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where to write the ONNX model (default: {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)
    out: Path = args.out

    x, y = make_dataset()
    params = train(x, y)
    print(f"train accuracy: {accuracy(params, x, y):.4f} ({len(y)} samples)")

    data = to_onnx(params).SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
