"""The interface between the lease manager and whatever runs Triton servers.

`Backend` is everything a backend offers the manager: running servers (the only I/O the
manager's server lifecycle does), checking what a request names before a lease is made,
and serving the stable addresses of what was committed. `BackendDefaults` gives the answers
of a backend that checks nothing and serves no addresses of its own (the simulator, tests);
real backends override what they do.
"""

from __future__ import annotations

from typing import Protocol

from tms_core.domain import PublishedState, Server
from tms_core.ids import ServerId


class Backend(Protocol):
    # ---- running servers

    @property
    def default_tritonserver(self) -> str:
        """The Triton binary (or image) that leases run unless they name another."""
        ...

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        """A server record with its addresses chosen, not yet started, running `binary`
        (a tritonserver from the allowlist; "" for the default)."""
        ...

    async def start(self, server: Server) -> None:
        """Starts the server's Triton and sidecar; records their process ids on `server`."""
        ...

    async def stop(self, server: Server) -> None:
        """Stops the server's processes (waiting for them) and removes its model directory."""
        ...

    def exit_reason(self, server: Server) -> str | None:
        """None while the server's processes run; otherwise why they are gone."""
        ...

    def adopt(self, server: Server) -> bool:
        """Whether a server recorded by an earlier daemon still runs and can be kept."""
        ...

    @property
    def revives_servers(self) -> bool:
        """Whether the manager restarts this backend's crashed servers (`restart`); False
        where something else does (Kubernetes) or nothing does (the simulator)."""
        ...

    def restart_sidecar(self, server: Server) -> bool:
        """Starts a new sidecar for a server whose Triton still runs but whose sidecar died;
        False if the Triton is gone too, or this backend does not restart processes."""
        ...

    async def restart(self, server: Server) -> bool:
        """Starts a server whose processes died again, on the same record: what is left of
        it is killed, then it starts afresh (on new ports where the old may linger). False
        where the backend restarts servers by itself or not at all (Kubernetes: the
        Deployment; the simulator)."""
        ...

    def needs_refill(self) -> bool:
        """Whether something a server's start uses was used up and is not yet replaced (the
        local backend's spare sidecar); `refill` replaces it."""
        ...

    def refill(self) -> None:
        """Replaces what `needs_refill` says is missing. Called when no model loads: it takes
        CPU that a load waits on."""
        ...

    async def revive_router(self) -> int | None:
        """Starts the process serving stable addresses again if it died; its new pid, or
        None when nothing had to be done (or this backend has no such process). Raises
        RuntimeError when it could not be started (the next pass tries again)."""
        ...

    def assignment_changed(self, server_id: ServerId) -> None:
        """Told, after the commit, that a server should now hold other models (a backend
        whose sidecars watch their assignment through the API has nothing to do)."""
        ...

    # ---- checking requests

    def check_model(self, field: str, name: str, uri: str) -> str | None:
        """Raises InvalidArgument (naming `field`) for a model this backend cannot serve;
        returns the model's framework when it can tell, else None."""
        ...

    async def check_present(self, field: str, name: str, uri: str) -> None:
        """Raises InvalidArgument (naming `field` and the model) unless the model at `uri`
        exists and is readable with the configured credentials (a HEAD or a listing; the
        download is the sidecar's)."""
        ...

    def check_tritonserver(self, binary: str) -> None:
        """Raises InvalidArgument for a Triton that may not go on the allowlist."""
        ...

    def check_autoscale(self) -> None:
        """Raises InvalidArgument if this backend cannot autoscale a lease."""
        ...

    @property
    def hpa_autoscaling(self) -> bool:
        """Whether autoscaling leases get a HorizontalPodAutoscaler on one exclusive server
        (`kubernetes.autoscale_mode: hpa`) instead of replicas the daemon places."""
        ...

    def allocate_ports(self, count: int) -> list[int]:
        """Ports for a new lease's or name's stable address (HTTP, then gRPC)."""
        ...

    # ---- stable addresses

    def service_host(self, key: str) -> str:
        """The host of the stable address of a lease (its id) or a lease name."""
        ...

    def publish(self, state: PublishedState) -> None:
        """Hears the live state after every commit that changed what addresses lead to."""
        ...

    async def settled(self) -> None:
        """Returns once what was last published is served (a READY lease answers)."""
        ...


class BackendDefaults:
    """What a backend that checks nothing and serves no addresses answers."""

    def assignment_changed(self, server_id: ServerId) -> None:
        return None

    def check_model(self, field: str, name: str, uri: str) -> str | None:
        return None

    async def check_present(self, field: str, name: str, uri: str) -> None:
        return None

    def check_tritonserver(self, binary: str) -> None:
        return None

    def check_autoscale(self) -> None:
        return None

    @property
    def hpa_autoscaling(self) -> bool:
        return False

    def allocate_ports(self, count: int) -> list[int]:
        return [0] * count

    revives_servers = False

    def restart_sidecar(self, server: Server) -> bool:
        return False

    async def restart(self, server: Server) -> bool:
        return False

    def needs_refill(self) -> bool:
        return False

    def refill(self) -> None:
        return None

    async def revive_router(self) -> int | None:
        return None

    def service_host(self, key: str) -> str:
        return "127.0.0.1"

    def publish(self, state: PublishedState) -> None:
        return None

    async def settled(self) -> None:
        return None
