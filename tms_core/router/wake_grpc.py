"""The activator's word to the daemon: `LeaseService.Wake` over the daemon's gRPC API.

On Kubernetes the router runs in its own pods (the activator, manifests/base/activator.yaml),
not beside the daemon, so the datagram of router/wake.py cannot reach it. Each route there
names its lease (`Route.lease`); a connection held at a parked lease's address calls `Wake`
with that id, in a thread so the proxy's loop never waits on the call. Only this mode imports
grpc and the API stubs, when the router starts with `--wake-grpc`: the local router stays
standard library only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0
"""A Wake returns once the wake is under way, not when the lease serves."""


def read_token(token_file: Path | None) -> str:
    """The API token: the file's content (a mounted Secret), else `$TMS_TOKEN`, else ""."""
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip()
    return os.environ.get("TMS_TOKEN", "")


def grpc_sender(
    target: str,
    lease_at: Callable[[str], str],
    *,
    token: str | Callable[[], str] = "",
    ca: Path | None = None,
) -> Callable[[str], None]:
    """The router's `wake` callable: finds the lease of the address with `lease_at` and calls
    `Wake` on the daemon at `target` (`host:port`, or `https://host:port` with TLS, trusting
    `ca` or else the system's authorities). A callable `token` is read for each call: the
    daemon replaces a revoked token in the mounted Secret, and the kubelet updates the file
    in place, so the pod needs no restart."""
    import grpc

    from tms_core.api import tms_pb2 as pb
    from tms_core.api import tms_pb2_grpc as pb_grpc

    if target.startswith("https://"):
        roots = ca.read_bytes() if ca is not None else None
        channel = grpc.secure_channel(
            target.removeprefix("https://").rstrip("/"),
            grpc.ssl_channel_credentials(root_certificates=roots),
        )
    else:
        channel = grpc.insecure_channel(target)
    stub = pb_grpc.LeaseServiceStub(channel)
    current = token if callable(token) else (lambda: token)
    # One call in flight per lease: a held connection asks again every second anyway.
    asking: set[str] = set()
    lock = threading.Lock()

    def call(listen: str, lease: str) -> None:
        try:
            secret = current()
            metadata = (("authorization", f"Bearer {secret}"),) if secret else ()
            stub.Wake(pb.LeaseRef(id=lease), timeout=CALL_TIMEOUT_S, metadata=metadata)
            log.info("%s: asked %s to wake lease %s", listen, target, lease)
        except OSError as exc:
            log.warning("%s: cannot read the token for Wake(%s): %s", listen, lease, exc)
        except grpc.RpcError as exc:
            # FAILED_PRECONDITION: not parked (already waking or serving); the rest are
            # retried by the next ask while connections wait.
            log.warning(
                "%s: Wake(%s) at %s: %s %s", listen, lease, target, exc.code(), exc.details()
            )
        finally:
            with lock:
                asking.discard(lease)

    def wake(listen: str) -> None:
        lease = lease_at(listen)
        if not lease:
            log.warning("%s: a parked address whose route names no lease", listen)
            return
        with lock:
            if lease in asking:
                return
            asking.add(lease)
        threading.Thread(target=call, args=(listen, lease), name="wake", daemon=True).start()

    return wake
