"""Model repositories: the sidecar's S3 download against boto3's own TransferManager, and
time to READY from a warm node cache against a cold one.

One model (the add_sub example plus `--files` weight files of `--mib` MiB in all) is put in
a moto S3 server on 127.0.0.1 (a subprocess). Rounds alternate the two downloads of the same
objects into fresh directories: boto3's TransferManager (all files submitted at once, its
default concurrency) and the sidecar's `Fetcher` without a cache (listing, limits, progress,
staging and the rename into place included). Then a daemon with real Triton leases the model
`--rounds` times with the cache emptied first (cold) and as many times with it kept (warm).
Run: `.venv/bin/python benchmarks/repositories.py [--mib 256] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import yaml  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from s3transfer.manager import TransferManager  # noqa: E402

from tests.conftest import EXAMPLES, Daemon  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.backends.local import free_ports  # noqa: E402
from tms_core.lease_request import LeaseOptions, ModelRequest  # noqa: E402
from tms_core.repos.fetcher import Fetcher  # noqa: E402
from tms_core.repos.settings import Repository, RepositorySettings  # noqa: E402
from tms_core.repos.sources import s3  # noqa: E402

KEY, SECRET = "AKIABENCH", "bench-secret"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ready", action="store_true", help="only the download throughput")
    args = parser.parse_args()
    os.environ.update(
        AWS_EC2_METADATA_DISABLED="true", AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET
    )
    work = Path(tempfile.mkdtemp(prefix="tms-bench-repos-"))
    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="models")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        model = work / "source" / "add_sub"
        shutil.copytree(EXAMPLES / "add_sub", model, ignore=shutil.ignore_patterns("__pycache__"))
        size = args.mib * 1024**2 // args.files
        for i in range(args.files):
            (model / "1" / f"weights-{i}.bin").write_bytes(os.urandom(size))
        keys = []
        for file in sorted(model.rglob("*")):
            if file.is_file():
                key = f"add_sub/{file.relative_to(model).as_posix()}"
                client.upload_file(str(file), "models", key)
                keys.append((key, file.stat().st_size))
        total = sum(s for _, s in keys)
        settings = RepositorySettings(
            repositories=[
                Repository(prefix="s3://models/", endpoint_url=endpoint, region="us-east-1")
            ]
        )
        boto_s, ours_s, tuned_s = [], [], []
        # Made once, like boto3's client above and like a sidecar's, which lives as long as
        # its server: its S3 client and connections are reused from fetch to fetch.
        fetcher = Fetcher(settings, work / "models", None)
        for round_ in range(args.rounds):
            dest = work / f"boto-{round_}"
            started = time.perf_counter()
            with TransferManager(client, TransferConfig()) as manager:
                futures = []
                for key, _ in keys:
                    path = dest / key
                    path.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(manager.download("models", key, str(path)))
                for future in futures:
                    future.result()
            boto_s.append(time.perf_counter() - started)
            shutil.rmtree(dest)
            # The same TransferManager with the sidecar's part and read sizes: how much of
            # the difference is those settings alone.
            started = time.perf_counter()
            tuned = TransferConfig(
                multipart_threshold=2 * s3.PART,
                multipart_chunksize=s3.PART,
                io_chunksize=s3.IO_CHUNK,
            )
            with TransferManager(client, tuned) as manager:
                futures = []
                for key, _ in keys:
                    path = dest / key
                    path.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(manager.download("models", key, str(path)))
                for future in futures:
                    future.result()
            tuned_s.append(time.perf_counter() - started)
            shutil.rmtree(dest)
            fetcher.model_dir.mkdir()
            started = time.perf_counter()
            fetcher.fetch("add_sub", "s3://models/add_sub")
            ours_s.append(time.perf_counter() - started)
            shutil.rmtree(fetcher.model_dir)
        cold, warm = ([], []) if args.no_ready else time_to_ready(work, endpoint, args.rounds)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)
    mib = total / 1024**2
    boto_mib_s = mib / statistics.median(boto_s)
    ours_mib_s = mib / statistics.median(ours_s)
    print(f"model: {mib:.0f} MiB in {len(keys)} objects, {args.rounds} rounds (medians)")
    print(f"  boto3 TransferManager  {boto_mib_s:8.1f} MiB/s")
    tuned_mib_s = mib / statistics.median(tuned_s)
    print(f"  sidecar Fetcher        {ours_mib_s:8.1f} MiB/s")
    print(f"  boto3 TransferManager with the sidecar's part sizes {tuned_mib_s:8.1f} MiB/s")
    figures = (
        f"mib={mib:.0f} boto_mib_s={boto_mib_s:.1f} sidecar_mib_s={ours_mib_s:.1f}"
        f" throughput_ratio={ours_mib_s / boto_mib_s:.2f} boto_same_parts_mib_s={tuned_mib_s:.1f}"
    )
    if cold and warm:
        cold_s, warm_s = statistics.median(cold), statistics.median(warm)
        print(f"  time to READY: cold cache {cold_s:.2f}s, warm {warm_s:.2f}s")
        figures += (
            f" cold_ready_s={cold_s:.2f} warm_ready_s={warm_s:.2f}"
            f" warm_speedup={cold_s / warm_s:.2f}"
        )
    print(figures)


def time_to_ready(work: Path, endpoint: str, rounds: int) -> tuple[list[float], list[float]]:
    state = work / "daemon"
    state.mkdir()
    config = work / "tms.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repositories": {
                    "repositories": [
                        {"prefix": "s3://models/", "endpoint_url": endpoint, "region": "us-east-1"}
                    ]
                }
            }
        )
    )
    daemon = Daemon(state, "--idle-grace=600s", f"--config={config}").start()
    cache = state / "model-cache" / "entries"
    cold: list[float] = []
    warm: list[float] = []
    try:
        for round_ in range(rounds * 2):
            is_cold = round_ % 2 == 0
            if is_cold:
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            updates = list(
                daemon.client.acquire(
                    [ModelRequest("add_sub", "s3://models/add_sub")], LeaseOptions(duration_s=600)
                )
            )
            elapsed = time.perf_counter() - started
            assert updates[-1].state == pb.LEASE_READY, updates[-1].reason
            (cold if is_cold else warm).append(elapsed)
            daemon.client.release(updates[-1].id)
    finally:
        daemon.stop()
        daemon.client.close()
    return cold, warm


if __name__ == "__main__":
    main()
