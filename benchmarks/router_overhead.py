"""Latency the router adds, against the same requests sent direct, side by side in one run.

Two parts. The raw hop: one backend process (a `ThreadingHTTPServer` answering a 2-byte body)
and one router process (`python -m tms_core.router`) routing a port to it; one keep-alive
`http.client` connection each way from this process. Then real inference: a daemon, a lease
on `add_sub`, and an unmodified `tritonclient` (HTTP, then gRPC) calling it at the lease's
address (through the router) and at its server's direct address (`endpoints.servers[]`),
and reads the CPU time the router process used per routed inference from /proc.
The backends run apart so that their threads do not share this process's GIL with the
client's timing loop. The rounds alternate which path goes first, so both see the same
machine noise. Each round prints its own percentiles; the last line sums up all rounds as
key=value pairs.

Targets (issue 16, inference): p50 ≤ 1.10×, p99 ≤ 1.5× the direct address.
Run: `.venv/bin/python benchmarks/router_overhead.py [--rounds N] [--requests N]
[--inferences N] [--no-triton] [--router-loop L] [--router-cpu auto|none|N] [--haproxy]`.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import ADD_SUB, add_sub_call, bench_env, running_daemon  # noqa: E402
from tms_core.api import tms_pb2 as pb  # noqa: E402
from tms_core.lease_request import LeaseOptions  # noqa: E402
from tms_core.router.routes import Route, read_applied, write_routes  # noqa: E402

HOST = "127.0.0.1"
BODY = b"ok"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        # One write: headers and body in separate segments would measure Nagle, not routing.
        self.wfile.write(RESPONSE)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve() -> None:
    """The backend process: prints its port, then serves until stdin closes."""
    backend = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    print(backend.server_address[1], flush=True)
    sys.stdin.read()
    backend.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sample(conn: http.client.HTTPConnection, count: int) -> list[float]:
    """Microseconds per request, request sent to body read, on one kept-alive connection."""
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter_ns() - start) / 1000)
        assert body == BODY, body
    return times


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def alternate(paths: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Runs each path's sampler once a round, alternating which goes first; prints each
    round's percentiles. Every path's times over all rounds."""
    totals: dict[str, list[float]] = {name: [] for name in paths}
    for round_no in range(rounds):
        order = list(paths) if round_no % 2 == 0 else list(reversed(paths))
        figures = {}
        for name in order:
            times = paths[name]()
            totals[name].extend(times)
            figures[name] = (percentile(times, 50), percentile(times, 99))
        print(
            f"round {round_no + 1}: "
            + "  ".join(
                f"{name} p50 {figures[name][0]:6.1f} us  p99 {figures[name][1]:6.1f} us"
                for name in paths
            ),
            flush=True,
        )
    return totals


def raw_hop(
    rounds: int, requests: int, loop: str = "auto", cpu: str = "auto"
) -> dict[str, list[float]]:
    """The raw HTTP hop: a tiny backend direct and through a router process."""
    backend = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert backend.stdout is not None and backend.stdin is not None
    backend_port = int(backend.stdout.readline())
    listen = free_port()

    with tempfile.TemporaryDirectory(prefix="tms-router-bench-") as tmp:
        routes = Path(tmp) / "routes.json"
        log_path = Path(tmp) / "router.log"
        write_routes(routes, 1, [Route(f"{HOST}:{listen}", (f"{HOST}:{backend_port}",), "bench")])
        with open(log_path, "wb") as log:
            router = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tms_core.router",
                    "--routes",
                    str(routes),
                    f"--loop={loop}",
                    f"--cpu={cpu}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            deadline = time.monotonic() + 10
            while read_applied(routes.with_name("routes.json.applied")) != 1:
                if router.poll() is not None or time.monotonic() > deadline:
                    sys.stderr.write(log_path.read_text())
                    raise SystemExit("router did not come up")
                time.sleep(0.01)

            paths = {
                "direct": http.client.HTTPConnection(HOST, backend_port),
                "routed": http.client.HTTPConnection(HOST, listen),
            }
            for conn in paths.values():
                sample(conn, 500)  # warm-up: connect, first allocations

            totals = alternate(
                {name: partial(sample, conn, requests) for name, conn in paths.items()}, rounds
            )
            for conn in paths.values():
                conn.close()
        finally:
            router.terminate()
            router.wait(5)
            backend.stdin.close()
            backend.wait(5)

    return totals


def timed(call: Callable[[], None], count: int) -> list[float]:
    """Microseconds per call, one after another."""
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1000)
    return times


def inference(
    rounds: int, count: int, cpu: str = "auto", haproxy: str | None = None
) -> dict[str, list[float]]:
    """add_sub through an unmodified tritonclient at the lease's address and direct (and,
    with `haproxy`, through that binary in front of the same server)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    env = bench_env(TMS_LOCAL__ROUTER_CPU=cpu)
    with tempfile.TemporaryDirectory(prefix="tms-router-infer-") as tmp:
        with running_daemon(Path(tmp), env=env) as (_, client):
            *_, lease = client.acquire([ADD_SUB], LeaseOptions(duration_s=600))
            assert lease is not None and lease.state == pb.LEASE_READY, lease
            (server,) = lease.endpoints.servers
            calls = {
                "http_direct": add_sub_call(httpclient, server.http),
                "http_routed": add_sub_call(httpclient, lease.endpoints.http),
                "grpc_direct": add_sub_call(grpcclient, server.grpc),
                "grpc_routed": add_sub_call(grpcclient, lease.endpoints.grpc),
            }
            proxies = {"routed": router_pid(Path(tmp) / "state" / "routes.json")}
            external = None
            if haproxy:
                external, ports = start_haproxy(haproxy, Path(tmp), server.http, server.grpc)
                proxies["haproxy"] = external.pid
                calls["http_haproxy"] = add_sub_call(httpclient, f"{HOST}:{ports[0]}")
                calls["grpc_haproxy"] = add_sub_call(grpcclient, f"{HOST}:{ports[1]}")
            try:
                for call in calls.values():
                    timed(call, 300)  # warm-up: connections, the model's first inferences
                totals: dict[str, list[float]] = {}
                for proto in ("http", "grpc"):
                    group = {k: v for k, v in calls.items() if k[:4] == proto}
                    spent = dict.fromkeys(proxies, 0.0)

                    def sampler(
                        name: str, call: Callable[[], None], spent: dict[str, float]
                    ) -> list[float]:
                        # A proxy works only while its own path runs: its CPU over those calls.
                        pid = proxies.get(name[5:])
                        before = cpu_s(pid) if pid else 0.0
                        times = timed(call, count)
                        if pid:
                            spent[name[5:]] += cpu_s(pid) - before
                        return times

                    totals.update(
                        alternate(
                            {k: partial(sampler, k, v, spent) for k, v in group.items()}, rounds
                        )
                    )
                    for kind, used in spent.items():
                        calls_made = len(totals[f"{proto}_{kind}"])
                        totals[f"{proto}_{kind}_cpu"] = [used / calls_made * 1e6]
            finally:
                if external is not None:
                    external.terminate()
                    external.wait(10)
            client.release(lease.id)
            return totals


def start_haproxy(
    binary: str, work: Path, http: str, grpc: str
) -> tuple[subprocess.Popen[bytes], tuple[int, int]]:
    """HAProxy forwarding TCP to `http` and `grpc`, one thread pinned as the router is."""
    ports = (free_port(), free_port())
    cpu = max(os.sched_getaffinity(0))
    config = work / "haproxy.cfg"
    config.write_text(
        f"global\n    nbthread 1\n    cpu-map 1/1 {cpu}\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n"
        "    timeout client 1h\n    timeout server 1h\n"
        f"listen http\n    bind {HOST}:{ports[0]}\n    server triton {http}\n"
        f"listen grpc\n    bind {HOST}:{ports[1]}\n    server triton {grpc}\n"
    )
    proc = subprocess.Popen(
        [binary, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, ports[1]), timeout=1).close()
            return proc, ports
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{binary} did not start") from None
            time.sleep(0.05)


def router_pid(routes: Path) -> int:
    """The daemon's router process: the one reading `routes`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"--routes={routes}".encode() in cmdline:
                return int(entry.name)
    raise SystemExit(f"no router reads {routes}")


def cpu_s(pid: int) -> float:
    """CPU seconds `pid` has used (user and system, from /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=3000, help="raw hop, per path per round")
    parser.add_argument("--inferences", type=int, default=1000, help="add_sub, per path per round")
    parser.add_argument("--no-triton", action="store_true", help="only the raw hop")
    parser.add_argument(
        "--router-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the raw hop's router event loop (the daemon's router runs on auto)",
    )
    parser.add_argument(
        "--router-cpu",
        default="auto",
        metavar="auto|none|N",
        help="the routers' CPU (python -m tms_core.router --cpu, local.router_cpu)",
    )
    parser.add_argument(
        "--haproxy",
        action="store_true",
        help="also time HAProxy (from PATH) in front of the same server, pinned as the router is",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0

    print("raw HTTP hop (microseconds):", flush=True)
    raw = raw_hop(args.rounds, args.requests, args.router_loop, args.router_cpu)
    direct_p50, routed_p50 = percentile(raw["direct"], 50), percentile(raw["routed"], 50)
    figures = [
        f"direct_p50_us={direct_p50:.1f}",
        f"routed_p50_us={routed_p50:.1f}",
        f"p50_ratio={routed_p50 / direct_p50:.2f}",
        f"direct_p99_us={percentile(raw['direct'], 99):.1f}",
        f"routed_p99_us={percentile(raw['routed'], 99):.1f}",
    ]
    if not args.no_triton:
        print("add_sub inference with tritonclient (microseconds):", flush=True)
        haproxy = shutil.which("haproxy") if args.haproxy else None
        if args.haproxy and haproxy is None:
            raise SystemExit("--haproxy: no haproxy on PATH")
        infer = inference(args.rounds, args.inferences, args.router_cpu, haproxy)
        for proto in ("http", "grpc"):
            for q in (50, 99):
                direct = percentile(infer[f"{proto}_direct"], q)
                routed = percentile(infer[f"{proto}_routed"], q)
                figures += [
                    f"{proto}_direct_p{q}_us={direct:.0f}",
                    f"{proto}_routed_p{q}_us={routed:.0f}",
                    f"{proto}_p{q}_ratio={routed / direct:.2f}",
                ]
            figures.append(f"{proto}_router_cpu_us={infer[f'{proto}_routed_cpu'][0]:.0f}")
            if haproxy:
                for q in (50, 99):
                    direct = percentile(infer[f"{proto}_direct"], q)
                    proxied = percentile(infer[f"{proto}_haproxy"], q)
                    figures.append(f"{proto}_haproxy_p{q}_ratio={proxied / direct:.2f}")
                figures.append(f"{proto}_haproxy_cpu_us={infer[f'{proto}_haproxy_cpu'][0]:.0f}")
    print(" ".join([f"router_cpu={args.router_cpu}", *figures]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
