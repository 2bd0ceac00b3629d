"""Time to READY through the daemon against the raw Triton path, side by side in one run.

cold: raw = start tritonserver + load_model; daemon = Acquire on an empty fleet until READY
      (the daemon starts the server and its sidecar, which fetches and loads the model).
warm: raw = load_model on a running server; daemon = Acquire when a running server has room.

The rounds alternate raw and daemon so both see the same machine noise; the figures are
medians. `--triton-arg` (repeatable) gives both paths the same extra tritonserver argument:
the raw server on its command line, the daemon's servers through `servers.triton_args`.
Run: `.venv/bin/python benchmarks/time_to_ready.py [--rounds N] [--triton-arg=ARG ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import running_daemon  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.api.client import TmsClient  # noqa: E402
from tms_core.backends.local import free_ports  # noqa: E402
from tms_core.lease_request import LeaseOptions, ModelRequest  # noqa: E402
from tms_core.triton.locate import locate  # noqa: E402

MODEL = ROOT / "examples" / "models" / "add_sub"
HOLDER = ROOT / "examples" / "models" / "blob_classifier"
POLL_S = 0.005


class RawTriton:
    """tritonserver started by hand, the way a user without TMS would."""

    def __init__(
        self, work: Path, extra: Sequence[str] = (), models: Sequence[Path] = (MODEL,)
    ) -> None:
        self.extra = list(extra)
        self.install = locate(None, None, work_dir=work)
        self.models = work / "raw-models"
        self.models.mkdir(parents=True)
        for model in models:
            shutil.copytree(model, self.models / model.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(work / "raw-triton.log", "ab")
        self.http_address = self.grpc_address = ""

    def start(self) -> httpclient.InferenceServerClient:
        http, grpc, metrics = free_ports(3)
        self.http_address, self.grpc_address = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        self.proc = subprocess.Popen(
            [
                str(self.install.binary),
                f"--model-repository={self.models}",
                "--model-control-mode=explicit",
                f"--backend-directory={self.install.backend_directory}",
                "--http-address=127.0.0.1",
                f"--http-port={http}",
                "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={metrics}",
                "--exit-timeout-secs=5",
                *self.extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.install.env},
            start_new_session=True,
        )
        client = httpclient.InferenceServerClient(self.http_address)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"tritonserver exited with {self.proc.returncode}: see {self.log.name}"
                )
            try:
                if client.is_server_ready():
                    return client
            except Exception:
                pass
            time.sleep(POLL_S)

    def stop(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait()


def unload_fully(client: httpclient.InferenceServerClient, name: str) -> None:
    client.unload_model(name)
    while any(
        m["name"] == name and m.get("state") in ("READY", "UNLOADING")
        for m in client.get_model_repository_index()
    ):
        time.sleep(0.02)


def until_ready(client: TmsClient, models: list[ModelRequest]) -> pb.Lease:
    *_, lease = client.acquire(models, LeaseOptions(duration_s=600))
    assert lease is not None and lease.state == pb.LEASE_READY, lease
    return lease


def wait_no_servers(state_dir: Path) -> None:
    """Until every server's directory is gone (files beside them, such as the repository
    settings the sidecars read, stay)."""
    servers = state_dir / "servers"
    while servers.exists() and any(path.is_dir() for path in servers.iterdir()):
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--triton-arg", action="append", default=[], metavar="ARG")
    args = parser.parse_args(argv)
    model = ModelRequest("add_sub", MODEL.as_uri(), 64 * 1024**2)
    holder = ModelRequest("blob_classifier", HOLDER.as_uri(), 64 * 1024**2)
    times: dict[str, list[float]] = {
        k: [] for k in ("raw_cold", "tms_cold", "raw_warm", "tms_warm")
    }
    with tempfile.TemporaryDirectory(prefix="tms-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        raw = RawTriton(work, args.triton_arg)
        stack.callback(raw.log.close)
        daemon_args = ["--idle-grace=0.1s"]
        if args.triton_arg:
            config = work / "tms.yaml"
            config.write_text(json.dumps({"servers": {"triton_args": args.triton_arg}}))
            daemon_args.append(f"--config={config}")
        with running_daemon(work, daemon_args) as (_, client):
            # One unmeasured round each, so both paths start with warm page caches.
            for measured in [False] + [True] * args.rounds:
                t0 = time.perf_counter()
                triton = raw.start()
                triton.load_model("add_sub")
                raw_cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                triton.unload_model("add_sub")
                unload_fully(triton, "add_sub")
                t0 = time.perf_counter()
                triton.load_model("add_sub")
                raw_warm = time.perf_counter() - t0
                triton.close()
                raw.stop()

                t0 = time.perf_counter()
                lease = until_ready(client, [model])
                tms_cold = time.perf_counter() - t0
                client.release(lease.id)
                wait_no_servers(work / "state")

                kept = until_ready(client, [holder])
                t0 = time.perf_counter()
                lease = until_ready(client, [model])
                tms_warm = time.perf_counter() - t0
                assert lease.server_id == kept.server_id, "warm lease did not join the server"
                client.release(lease.id)
                client.release(kept.id)
                wait_no_servers(work / "state")
                if measured:
                    for key, value in (
                        ("raw_cold", raw_cold),
                        ("tms_cold", tms_cold),
                        ("raw_warm", raw_warm),
                        ("tms_warm", tms_warm),
                    ):
                        times[key].append(value)
                    print(
                        f"round {len(times['raw_cold'])}: "
                        + " ".join(f"{k}={v[-1]:.3f}s" for k, v in times.items()),
                        flush=True,
                    )
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = f"triton_args={','.join(args.triton_arg)} " if args.triton_arg else ""
    print(
        f"rounds={args.rounds} {extra}raw_cold_s={med['raw_cold']:.3f} "
        f"tms_cold_s={med['tms_cold']:.3f} "
        f"raw_warm_s={med['raw_warm']:.3f} tms_warm_s={med['tms_warm']:.3f} "
        f"cold_ratio={med['tms_cold'] / med['raw_cold']:.3f} "
        f"warm_ratio={med['tms_warm'] / med['raw_warm']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
