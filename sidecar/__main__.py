"""`python -m sidecar`: started by the daemon's local backend beside each tritonserver."""

from __future__ import annotations

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
    """The fetcher, made in a thread while Triton starts: importing the repository settings
    (pydantic) takes 0.3 s, 0.9 s on a loaded 2-core machine, and Triton is ready in about
    0.1 s, so importing them first would delay every cold server's first load."""
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
    agent = Agent(
        daemon=args.daemon,
        server_id=args.server_id,
        triton=TritonGrpc(args.triton_grpc),
        model_dir=args.model_dir,
        metrics_address=args.triton_metrics,
        fetcher=_fetcher_soon(args),
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
