"""What the sidecar does differently to start quickly (a cold lease waits for its start): its
own stub of the daemon's SidecarService asks for what the generated one does, and its GPU
reader loads NVML only when opened or first read."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from sidecar.daemon_api import SidecarStub
from sidecar.measure import GpuReader
from tms_core.api import tms_pb2_grpc


class RecordingChannel:
    def __init__(self) -> None:
        self.made: list[tuple[str, str, Any, Any, bool]] = []

    def _record(self, kind: str) -> Any:
        def make(
            method: str,
            request_serializer: Any = None,
            response_deserializer: Any = None,
            _registered_method: bool = False,
        ) -> str:
            self.made.append(
                (kind, method, request_serializer, response_deserializer, _registered_method)
            )
            return method

        return make

    def __getattr__(self, kind: str) -> Any:
        return self._record(kind)


def test_the_sidecar_stub_matches_the_generated_one() -> None:
    ours, generated = RecordingChannel(), RecordingChannel()
    stub = SidecarStub(ours)
    tms_pb2_grpc.SidecarServiceStub(generated)
    assert sorted(ours.made, key=repr) == sorted(generated.made, key=repr)
    assert (stub.Connect, stub.Report) == (
        "/tms.v1.SidecarService/Connect",
        "/tms.v1.SidecarService/Report",
    )


def test_the_gpu_reader_loads_nvml_when_opened_not_when_made() -> None:
    code = (
        "import sys\n"
        "from sidecar.measure import GpuReader\n"
        "reader = GpuReader()\n"
        "print('pynvml' in sys.modules)\n"
        "reader.open(); reader.open()\n"
        "print(reader.used_by([]), reader.used_by([1]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    made, read = result.stdout.split("\n")[:2]
    assert made == "False"
    # No GPU here (0), or one that PID 1 does not use (0 too).
    assert read == "0 0"


def test_a_reading_opens_the_reader() -> None:
    reader = GpuReader()
    assert reader.used_by([]) == 0
    assert not reader._opened  # nothing to read: NVML is not needed yet
    reader.used_by([1])
    assert reader._opened
