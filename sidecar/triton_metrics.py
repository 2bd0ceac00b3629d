"""Reading Triton's Prometheus metrics endpoint: each model's load, for autoscaling.

Per model (summed over its versions): the queue time and requests (successful and failed)
counted since it loaded, its inferences, and the requests pending now. The daemon turns the
counters into per-interval rates between reports (`tms_core/manager/scaling.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^(nv_inference_[a-z_]+)\{([^}]*)\}\s+(\S+)")
_MODEL = re.compile(r'model="([^"]*)"')

_WANTED = {
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "requests",
    "nv_inference_count": "inferences",
    "nv_inference_pending_request_count": "pending",
}


@dataclass
class ModelLoad:
    queue_us: float = 0.0
    requests: int = 0
    inferences: int = 0
    pending: float = 0.0


def parse(text: str) -> dict[str, ModelLoad]:
    """Each model's load from the metrics endpoint's text (lines it does not know ignored)."""
    loads: dict[str, ModelLoad] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None or match.group(1) not in _WANTED:
            continue
        model = _MODEL.search(match.group(2))
        if model is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        load = loads.setdefault(model.group(1), ModelLoad())
        field = _WANTED[match.group(1)]
        if field in ("requests", "inferences"):
            setattr(load, field, getattr(load, field) + int(value))
        else:
            setattr(load, field, getattr(load, field) + value)
    return loads


def read(address: str, timeout: float = 2.0) -> dict[str, ModelLoad]:
    """Reads `http://<address>/metrics` (blocking: run it in a thread)."""
    # Imported here: http.client and email are not needed until the first model is ready,
    # and the sidecar starts beside tritonserver (see sidecar/__main__.py).
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as answer:
        return parse(answer.read().decode("utf-8", "replace"))
