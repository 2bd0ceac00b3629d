"""`python -m tms_core.router --routes FILE [--applied FILE] [--hold S] [--hold-max N]
[--wake-socket NAME | --wake-grpc TARGET [--token-file FILE] [--ca FILE]] [--cpu auto|none|N]`.

The router process: it reloads the routes file on SIGHUP and, in case a signal is lost or the
daemon that sent it died, whenever the file's identity (inode, size, mtime) changes, checked
every 0.25 s. A file it cannot use is logged and ignored: the last good table stays in force,
since cutting inference over a daemon bug would be worse than routing on a stale table for a
while.

With `--wake-socket`, a connection to a parked lease's address sends the address, as one
datagram, to the daemon's Unix socket of that name (router/wake.py); the daemon wakes the
lease it belongs to. With `--wake-grpc` (the Kubernetes activator, in its own pods) it calls
the daemon's `LeaseService.Wake` with the lease its route names instead (router/wake_grpc.py;
the token from `--token-file` or `$TMS_TOKEN`).

It keeps to one CPU of its own where the machine has two or more (`--cpu`, router/cpu.py):
left free, it queued behind the processes it forwards between. Under `--cpu auto` it lets the
pin go while any route holds for a lease on its way to READY: the loads then take whole CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tms_core.aiotasks import create_guarded_task
from tms_core.router import cpu
from tms_core.router.proxy import HOLD_MAX, HOLD_S, Router
from tms_core.router.routes import RoutesError, applied_path, load_routes, write_atomic
from tms_core.router.wake import sender

log = logging.getLogger("tms_core.router")

POLL_S = 0.25
REBIND_S = 1.0
SHUTDOWN_GRACE_S = 2.0

_FileId = tuple[int, int, int] | None


def _file_id(path: Path) -> _FileId:
    # The daemon replaces the file, so the inode changes with every write, even one within
    # the same mtime tick and of the same size.
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _Watcher:
    def __init__(
        self, router: Router, routes: Path, applied: Path, affinity: cpu.Affinity | None = None
    ) -> None:
        self.router = router
        self.routes = routes
        self.applied = applied
        self.affinity = affinity
        self.hup = asyncio.Event()
        self._seen: _FileId = None
        self._version: int | None = None

    async def reload(self) -> None:
        """Applies the file if it is good; otherwise logs one line and keeps the last table."""
        self._seen = _file_id(self.routes)
        try:
            table = load_routes(self.routes)
        except RoutesError as exc:
            kept = "none" if self._version is None else f"version {self._version}"
            log.error("routes file %s rejected, keeping %s: %s", self.routes, kept, exc)
            return
        unbound = await self.router.apply(table.routes)
        self._version = table.version
        if self.affinity is not None:
            # A route holds its connections while its lease is pending or loading (or waking):
            # while any does, models are loading beside the router.
            self.affinity.loading(any(route.hold for route in table.routes))
        log.info(
            "routes version %d in force: %d listening, %d not bound",
            table.version,
            len(self.router.listening),
            len(unbound),
        )
        try:
            write_atomic(self.applied, f"{table.version}\n")
        except OSError as exc:
            log.error("cannot write applied version to %s: %s", self.applied, exc)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_rebind = loop.time() + REBIND_S
        while True:
            try:
                await asyncio.wait_for(self.hup.wait(), POLL_S)
                log.info("SIGHUP: reloading %s", self.routes)
            except TimeoutError:
                pass
            if self.hup.is_set() or _file_id(self.routes) != self._seen:
                self.hup.clear()
                await self.reload()
            if self.router.unbound and loop.time() >= next_rebind:
                await self.router.rebind()
                next_rebind = loop.time() + REBIND_S


async def _run(
    routes: Path,
    applied: Path,
    *,
    hold_s: float,
    hold_max: int,
    wake_socket: str | None,
    wake_grpc: tuple[str, Callable[[], str], Path | None] | None = None,
    affinity: cpu.Affinity | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    router = Router(hold_s=hold_s, hold_max=hold_max)
    if wake_grpc is not None:
        # Only here: grpc and the stubs would slow every local router's start.
        from tms_core.router.wake_grpc import grpc_sender

        target, token, ca = wake_grpc
        router.set_wake(grpc_sender(target, router.lease_at, token=token, ca=ca))
    elif wake_socket:
        router.set_wake(sender(wake_socket))
    watcher = _Watcher(router, routes, applied, affinity)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, watcher.hup.set)
    log.info("router pid %d: routes %s, applied %s", os.getpid(), routes, applied)
    await watcher.reload()
    watch = create_guarded_task(watcher.run(), name="watch routes", logger=log)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({watch, stopping}, return_when=asyncio.FIRST_COMPLETED)
    failed = watch.done()
    watch.cancel()
    stopping.cancel()
    log.info("stopping: no new connections, %.0fs for open ones", SHUTDOWN_GRACE_S)
    await router.close(grace=SHUTDOWN_GRACE_S)
    # A watcher that died would leave the table stale: exit non-zero so a supervisor sees it.
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tms_core.router", description="TCP router for TMS lease addresses."
    )
    parser.add_argument("--routes", type=Path, required=True, help="routes file (JSON)")
    parser.add_argument(
        "--applied",
        type=Path,
        help="where to write the version in force (default: <routes>.applied)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=HOLD_S,
        metavar="SECONDS",
        help=f"how long a connection waits for a backend (default {HOLD_S:g}; 0: never)",
    )
    parser.add_argument(
        "--hold-max",
        type=int,
        default=HOLD_MAX,
        metavar="N",
        help=f"connections held at once per address (default {HOLD_MAX})",
    )
    parser.add_argument(
        "--wake-socket",
        metavar="NAME",
        help="the daemon's datagram socket (@NAME: abstract) told of connections to parked "
        "leases' addresses",
    )
    parser.add_argument(
        "--wake-grpc",
        metavar="TARGET",
        help="the daemon's gRPC API (host:port, https://host:port with TLS): a connection to "
        "a parked lease's address calls LeaseService.Wake with the lease its route names",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="with --wake-grpc: the API token (default: $TMS_TOKEN)",
    )
    parser.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="with --wake-grpc and https://: the daemon's CA (default: the system's)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop (default auto: uvloop where installed, else asyncio's own)",
    )
    parser.add_argument(
        "--cpu",
        type=_cpu_choice,
        default="auto",
        metavar="auto|none|N",
        help="the CPU to run on (default auto: the highest-numbered one allowed, when there "
        "are two or more; none: wherever the scheduler puts it)",
    )
    parser.add_argument("--debug", action="store_true", help="log every connection")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    affinity = cpu.Affinity(args.cpu)
    if affinity.cpu is not None:
        log.info(
            "running on CPU %d%s",
            affinity.cpu,
            ", on any while leases load" if affinity.follows_loads else "",
        )
    routes: Path = args.routes
    applied: Path = args.applied or applied_path(routes)
    if args.wake_grpc and args.wake_socket:
        parser.error("--wake-grpc and --wake-socket exclude each other")
    wake_grpc = None
    if args.wake_grpc:
        from tms_core.router.wake_grpc import read_token

        token_file: Path | None = args.token_file
        read_token(token_file)  # a file that cannot be read is an error at start
        wake_grpc = (args.wake_grpc, lambda: read_token(token_file), args.ca)
    run = _run(
        routes,
        applied,
        hold_s=args.hold,
        hold_max=args.hold_max,
        wake_socket=args.wake_socket,
        wake_grpc=wake_grpc,
        affinity=affinity,
    )
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
        else:
            # libuv's loop takes about half the time asyncio's does per forwarded chunk, which
            # is most of what a lease address adds to a small request
            # (benchmarks/router_overhead.py).
            return uvloop.run(run)
    return asyncio.run(run)


def _cpu_choice(value: str) -> str | int:
    try:
        return cpu.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
