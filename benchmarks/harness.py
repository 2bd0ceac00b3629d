"""What the benchmarks share: a daemon started on free ports in a scratch directory, waited
for and stopped (SIGTERM, which stops its servers) when the block ends; and an add_sub
inference through an unmodified `tritonclient`.

    with running_daemon(work) as (target, client):
        ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tms_core.api.client import TmsClient  # noqa: E402
from tms_core.backends.local import free_ports  # noqa: E402
from tms_core.cli.demo import wait_for_daemon  # noqa: E402
from tms_core.lease_request import ModelRequest  # noqa: E402

ADD_SUB = ModelRequest("add_sub", (ROOT / "examples/models/add_sub").as_uri(), 64 * 1024**2)


def add_sub_call(module: Any, address: str) -> Callable[[], None]:
    """One add_sub inference through `module` (tritonclient.http or .grpc), ready to repeat."""
    client = module.InferenceServerClient(address)
    a = np.arange(4, dtype=np.float32)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)

    def call() -> None:
        result = client.infer("add_sub", inputs)
        assert result.as_numpy("OUTPUT0") is not None

    return call


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for the benchmark's own processes: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


@contextmanager
def running_daemon(
    work: Path, args: Sequence[str] = (), env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[tuple[str, TmsClient]]:
    """A daemon with its state under `work` (its log in `work/daemon.log`): its target and a
    client to it. The log is printed if it does not come up."""
    (port,) = free_ports(1)
    target = f"127.0.0.1:{port}"
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tms_core.cli.main",
                "daemon",
                f"--listen={target}",
                f"--state={work}/state/state.db",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or bench_env(),
        )
    client = TmsClient(target)
    try:
        try:
            wait_for_daemon(client, daemon, timeout=timeout)
        except Exception:
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
            raise
        yield target, client
    finally:
        client.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
