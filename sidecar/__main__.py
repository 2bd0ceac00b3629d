"""`python -m sidecar`: started by the daemon's local backend beside each tritonserver."""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # A cold lease waits for this process to start, and most of its start is importing
    # (grpc, asyncio, protobuf), which makes objects that live as long as the process: the
    # cyclic collector would walk them again and again for nothing (~10 ms of ~0.15 s). It
    # is off until the imports are done (`_collector_back`).
    gc.disable()

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar import metrics
from sidecar.agent import Agent, ServerGone
from sidecar.triton_grpc import TritonGrpc

if TYPE_CHECKING:
    from sidecar.fetch import Fetcher


def _fetcher_soon(args: argparse.Namespace) -> Future[Fetcher]:
    """The fetcher, made in a thread while the sidecar connects and Triton starts: importing
    the repository machinery (without pydantic since issue 16: ~30 ms, 0.2 s with it) first
    would delay every cold server's first load by that."""
    future: Future[Fetcher] = Future()

    def make() -> None:
        try:
            from sidecar.fetch import Fetcher, read_settings

            future.set_result(
                Fetcher(read_settings(args.repositories), args.model_dir, args.cache_dir)
            )
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=make, name="fetcher-import", daemon=True).start()
    return future


def _collector_back(_: object) -> None:
    """The cyclic collector on again once start-up's imports (the fetcher's last) are done,
    with what they made frozen out of its sight, as the daemon does (`tms_core.gctune`)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tms-sidecar", description=__doc__)
    parser.add_argument("--daemon", required=True, help="host:port of the daemon's gRPC API")
    parser.add_argument("--server-id", required=True)
    parser.add_argument("--triton-grpc", required=True, help="host:port of Triton's gRPC API")
    parser.add_argument(
        "--triton-metrics", default="", help="host:port of Triton's metrics (for autoscaling)"
    )
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument(
        "--repositories",
        type=Path,
        help="the daemon's repository settings as JSON (credentials are named, not held)",
    )
    parser.add_argument("--cache-dir", type=Path, help="the machine's model cache")
    parser.add_argument(
        "--metrics-listen",
        default=os.environ.get("TMS_SIDECAR_METRICS_LISTEN", ""),
        help="host:port of this sidecar's Prometheus metrics (default: none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.metrics_listen:
        metrics.serve(args.metrics_listen)
    fetcher = _fetcher_soon(args)
    fetcher.add_done_callback(_collector_back)
    agent = Agent(
        daemon=args.daemon,
        server_id=args.server_id,
        triton=TritonGrpc(args.triton_grpc),
        model_dir=args.model_dir,
        metrics_address=args.triton_metrics,
        fetcher=fetcher,
        # Given by the daemon in the environment: good only for this server's reports.
        credential=os.environ.get("TMS_SIDECAR_TOKEN", ""),
    )

    async def run() -> None:
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()

        def stop() -> None:
            task.cancel()
            # A blocking Triton call in a worker thread would hold up the exit; the daemon
            # waits for this process, so never take long.
            watchdog = threading.Timer(3.0, os._exit, args=(0,))
            watchdog.daemon = True
            watchdog.start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(run())
    except ServerGone as exc:
        logging.getLogger("sidecar").info("server unknown to the daemon: %s", exc)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
