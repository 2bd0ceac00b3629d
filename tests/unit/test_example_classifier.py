"""The committed blob_classifier model matches its generator and classifies correctly."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "make_classifier.py"
COMMITTED_MODEL = REPO_ROOT / "examples" / "models" / "blob_classifier" / "1" / "model.onnx"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_classifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_committed_model(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    assert _load_script().main(["--out", str(out)]) == 0
    assert out.read_bytes() == COMMITTED_MODEL.read_bytes(), (
        "examples/models/blob_classifier/1/model.onnx is stale: "
        "rerun python examples/make_classifier.py"
    )


def test_committed_model_classifies_class_centers() -> None:
    centers = _load_script().CLASS_CENTERS.astype(np.float32)
    session = ort.InferenceSession(str(COMMITTED_MODEL), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": centers})

    assert probabilities.shape == (3, 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    for label in range(3):
        assert probabilities[label].argmax() == label
        assert probabilities[label, label] > 0.9
