"""`python -m sidecar`: started by the daemon's local backend beside each tritonserver.

`python -m sidecar --spare --log=FILE --room=...` is the same program started before its
server exists (tms_core/backends/spare_sidecar.py): it imports everything, then waits for one
JSON line on stdin naming its server (`command`: the command line it would have been started
with; `env`: variables to add, the sidecar's token among them; `log`: the file its output goes
to). It then rewrites its own command line to that one, in the room `--room` kept, so that it
is known as its server's sidecar, and runs as if started so. End of input ends it.
"""

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
import json
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


def _wait_for_server() -> list[str] | None:
    """The spare's wait (see the module docstring): its server's arguments, or None at EOF."""
    import sidecar.fetch  # noqa: F401  (the repository machinery: imported now, not on the path)

    gc.freeze()
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return None
    handed = json.loads(line)
    log_fd = os.open(handed["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    os.close(log_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.update(handed["env"])
    command: list[str] = handed["command"]
    if not _retitle(command):
        logging.getLogger("sidecar").warning("could not take the command line %s", command)
    return command[3:]  # after `python -m sidecar`


def _argument_memory() -> tuple[int, int]:
    """Where the kernel reads /proc/self/cmdline from: fields 48 and 49 of stat(5); (0, 0)
    where they cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # Counted from 1, where `fields` starts at field 3.
        return int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return 0, 0


def _retitle(command: list[str]) -> bool:
    """Makes /proc/self/cmdline read `command`: writes it over the argument strings the
    kernel reads it from, NUL-padded to their length. Python keeps its own copy of argv, so
    nothing here reads them again."""
    import ctypes

    start, end = _argument_memory()
    text = b"".join(part.encode() + b"\0" for part in command)
    if not start or len(text) > end - start:
        return False
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)
    return True


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--spare"]:
        start, end = _argument_memory()
        if not start or end - start < 1024:
            # Handed a server, it could not take that server's command line, and nothing
            # would know it for that server's sidecar: better no spare (the backend gives up).
            print("spare sidecar: cannot rewrite this process's command line", file=sys.stderr)
            return 3
        handed = _wait_for_server()
        if handed is None:
            return 0
        argv = handed
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
