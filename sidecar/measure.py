"""What a loaded model takes, measured rather than declared.

On the CPU, Triton's Python backend runs each model instance in a stub process of its own
(`triton_python_backend_stub <model dir>/<name>/<version>/model.py …`), so the model's memory
is the resident memory of its stubs. Where NVML sees a GPU, the same processes' GPU memory is
read too. Models of in-process backends (ONNX Runtime, TensorRT, …) have no process of their
own and are not measured here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_PAGE = 4096


def _stub_pids(model_dir: Path) -> dict[str, list[int]]:
    """Model name -> pids of its stub processes, from one pass over /proc."""
    marker = f"{model_dir}/".encode()
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"triton_python_backend_stub" not in cmdline or marker not in cmdline:
            continue
        # The stub's first argument is <model dir>/<name>/<version>/model.py.
        rest = cmdline.split(marker, 1)[1]
        name = rest.split(b"/", 1)[0].decode(errors="replace")
        found.setdefault(name, []).append(int(entry.name))
    return found


def _rss(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class GpuReader:
    """Per-process GPU memory through NVML, or nothing where there is no GPU.

    NVML is loaded at `open` (or the first reading), not when the reader is made: importing
    pynvml and finding no GPU takes ~15 ms of a CPU-only machine, more where it finds one, and
    the sidecar makes its reader while a cold lease waits for it to start. The sidecar opens it
    while Triton loads the first model instead."""

    def __init__(self) -> None:
        self._nvml: object | None = None
        self._opened = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Loads NVML if there is a GPU to read; once (later calls return at once)."""
        with self._lock:
            if self._opened:
                return
            self._opened = True
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception as exc:
                log.debug("no GPU measurements: %s", exc)

    def used_by(self, pids: list[int]) -> int:
        if not pids:
            return 0
        self.open()
        if self._nvml is None:
            return 0
        nvml = self._nvml
        wanted = set(pids)
        total = 0
        try:
            for index in range(nvml.nvmlDeviceGetCount()):  # type: ignore[attr-defined]
                handle = nvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):  # type: ignore[attr-defined]
                    if proc.pid in wanted and proc.usedGpuMemory:
                        total += int(proc.usedGpuMemory)
        except Exception as exc:
            log.debug("NVML read failed: %s", exc)
        return total


def measure_all(model_dir: Path, names: list[str], gpu: GpuReader) -> dict[str, tuple[int, int]]:
    """Name -> (resident bytes, GPU bytes) of each model's stub processes; (0, 0) for none."""
    pids = _stub_pids(model_dir)
    return {
        name: (sum(_rss(pid) for pid in pids.get(name, [])), gpu.used_by(pids.get(name, [])))
        for name in names
    }


def measure(model_dir: Path, name: str, gpu: GpuReader) -> tuple[int, int]:
    """(resident bytes, GPU bytes) of the model's stub processes; (0, 0) when none."""
    return measure_all(model_dir, [name], gpu)[name]
