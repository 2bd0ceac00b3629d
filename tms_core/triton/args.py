"""The `tritonserver` arguments a user may add (`servers.triton_args`), against the ones TMS
sets on every server itself (local processes and Kubernetes pods alike)."""

from __future__ import annotations

TRITON_ARGS_OF_TMS = frozenset(
    {
        "--model-repository",
        "--model-store",
        "--model-control-mode",
        "--load-model",
        "--backend-directory",
        "--allow-http",
        "--allow-grpc",
        "--allow-metrics",
        "--http-address",
        "--http-port",
        "--grpc-address",
        "--grpc-port",
        "--metrics-address",
        "--metrics-port",
        "--exit-timeout-secs",
    }
)
"""Set by TMS on every server: the sidecar, the router and the stop rely on them."""


def check_triton_args(args: list[str]) -> list[str]:
    for i, arg in enumerate(args):
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or len(flag) < 3 or any(c.isspace() for c in flag):
            raise ValueError(f"[{i}] {arg!r}: expected one argument, --name or --name=value")
        if flag in TRITON_ARGS_OF_TMS:
            raise ValueError(f"[{i}] {arg!r}: TMS sets {flag} itself")
    return args
