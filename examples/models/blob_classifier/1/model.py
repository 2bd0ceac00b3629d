"""Classify 4-feature points into one of three blobs with the ONNX MLP beside this file.

Inputs: ``features`` FP32 [batch, 4].  Outputs: ``probabilities`` FP32
[batch, 3] and ``class_index`` INT64 [batch] (the argmax).  The model is built
by ``examples/make_classifier.py``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    session: ort.InferenceSession

    def initialize(self, args: dict[str, str]) -> None:
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        # One instance, one thread: Triton scales by instances, not by threads.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            (probabilities,) = self.session.run(
                ["probabilities"], {"features": features.astype(np.float32, copy=False)}
            )
            class_index = np.argmax(probabilities, axis=-1).astype(np.int64)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("probabilities", probabilities.astype(np.float32)),
                        pb_utils.Tensor("class_index", class_index),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        del self.session
