"""`tms demo`: the whole product once, on this machine, for a new user.

Starts a daemon (on a free port, with a throw-away state), leases the example models, answers
inferences through unmodified Triton clients at the lease's endpoints, releases the lease and
stops the daemon, printing each step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient, state_name
from tms_core.backends.local import free_ports
from tms_core.cli import output
from tms_core.cli.common import one_line_errors
from tms_core.lease_request import LeaseOptions, ModelRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


def wait_for_daemon(client: TmsClient, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_leases()
            return
        except ClientError:
            if proc.poll() is not None:
                raise ClientError(f"the daemon exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@click.command()
@click.option(
    "--examples",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=EXAMPLES,
    show_default=True,
    help="The example model repository.",
)
@one_line_errors
def demo(examples: Path) -> None:
    """Start a daemon, lease the example models, run inferences, release, stop."""
    tmp = tempfile.mkdtemp(prefix="tms-demo-")
    try:
        _run(tmp, examples)
    except BaseException:
        # Its messages point at the logs in it (the daemon's, each server's).
        output.err.print(f"[yellow]kept {tmp} for its logs[/]")
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    output.out.print("[green]done[/]")


def _run(tmp: str, examples: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    say = output.out.print
    (port,) = free_ports(1)
    target = f"127.0.0.1:{port}"
    log_path = Path(tmp) / "daemon.log"
    say(f"[bold]1.[/] starting the tms daemon on {target} (log: {log_path})")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tms_core.cli.main",
                "daemon",
                f"--listen={target}",
                f"--state={tmp}/state.db",
                "--idle-grace=5s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    client = TmsClient(target)
    try:
        wait_for_daemon(client, proc, timeout=30)
        say("[bold]2.[/] acquiring a lease on add_sub and blob_classifier")
        models = [
            ModelRequest("add_sub", (examples / "add_sub").as_uri(), 64 * 1024**2),
            ModelRequest("blob_classifier", (examples / "blob_classifier").as_uri(), 128 * 1024**2),
        ]
        lease = output.follow_with_progress(
            client.acquire(models, LeaseOptions(duration_s=600)), show=True
        )
        output.print_lease(lease)
        if lease.state != pb.LEASE_READY:
            raise ClientError(
                f"lease {lease.id} ended {pb.LeaseState.Name(lease.state)}: {lease.reason}"
            )

        say(f"[bold]3.[/] add_sub over HTTP at {lease.endpoints.http} (tritonclient.http)")
        a = np.array([1, 2, 3, 4], dtype=np.float32)
        b = np.array([10, 20, 30, 40], dtype=np.float32)
        http = httpclient.InferenceServerClient(lease.endpoints.http)
        inputs = [
            httpclient.InferInput("INPUT0", [4], "FP32"),
            httpclient.InferInput("INPUT1", [4], "FP32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = http.infer("add_sub", inputs)
        say(f"    {a} + {b} = {result.as_numpy('OUTPUT0')}")
        say(f"    {a} - {b} = {result.as_numpy('OUTPUT1')}")

        grpc_at = lease.endpoints.grpc
        say(f"[bold]4.[/] blob_classifier over gRPC at {grpc_at} (tritonclient.grpc)")
        features = np.array([[0, 0, 0, 0], [4, 4, 0, 0], [0, 4, 4, 4]], dtype=np.float32)
        grpc_client = grpcclient.InferenceServerClient(lease.endpoints.grpc)
        feature_input = grpcclient.InferInput("features", list(features.shape), "FP32")
        feature_input.set_data_from_numpy(features)
        answer = grpc_client.infer("blob_classifier", [feature_input])
        for row, cls, probs in zip(
            features,
            answer.as_numpy("class_index"),
            answer.as_numpy("probabilities"),
            strict=True,
        ):
            say(f"    features {row} -> class {cls} (p={probs[cls]:.3f})")

        say(f"[bold]5.[/] releasing lease {lease.id}")
        released = client.release(lease.id)
        say(f"    lease {released.id} is {state_name(released.state)}")
    finally:
        client.close()
        say("[bold]6.[/] stopping the daemon (it stops its Triton servers)")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
