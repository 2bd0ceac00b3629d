"""The simulator's backend: servers that exist only as records, started after a delay.

Its simulated sidecars live in `SimFleet`, which hears through `assignment_changed` which
servers should now hold other models, as a real sidecar hears through its assignment stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tms_core.backends.base import BackendDefaults
from tms_core.domain import ServedModel, Server, ServerState
from tms_core.ids import ModelName, ServerId
from tms_core.inventory import Gpu, Node
from tms_core.units import parse_size

SIM_TRITON = "sim://tritonserver"


def parse_fleet(text: str, *, product: str = "simulated GPU") -> list[Node]:
    """`4x8x80GiB`: 4 nodes of 8 GPUs of 80 GiB each, named node-0 ... node-3."""
    parts = text.lower().split("x", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError(f"{text!r} is not NODESxGPUSxSIZE (for example 4x8x80GiB)")
    size = parse_size(text.split("x", 2)[2])
    return [
        Node(
            name=f"node-{n}",
            host_memory=0,
            gpus=tuple(
                Gpu(index=i, product=product, total_bytes=size) for i in range(int(parts[1]))
            ),
            source="simulated",
        )
        for n in range(int(parts[0]))
    ]


@dataclass
class SimServer:
    """A simulated Triton and its sidecar."""

    started: bool = False
    models: dict[ModelName, ServedModel] = field(default_factory=dict)


class SimBackend(BackendDefaults):
    """The `Backend` of the simulator: server records, and what it tells the fleet (a
    server was started; a server's assignment changed)."""

    def __init__(
        self,
        *,
        started: Callable[[ServerId], None],
        assignment_changed: Callable[[ServerId], None],
    ) -> None:
        self._on_start = started
        self._on_assignment = assignment_changed
        self.servers: dict[ServerId, SimServer] = {}
        self.started = 0

    @property
    def default_tritonserver(self) -> str:
        return SIM_TRITON

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        return Server(
            id=server_id,
            state=ServerState.STARTING,
            host="sim",
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            work_dir="",
            capacity_bytes=capacity_bytes,
            created_at=now,
            binary=binary or SIM_TRITON,
        )

    async def start(self, server: Server) -> None:
        self.servers[server.id] = SimServer()
        self.started += 1
        self._on_start(server.id)

    async def stop(self, server: Server) -> None:
        self.servers.pop(server.id, None)

    def exit_reason(self, server: Server) -> str | None:
        return None

    def adopt(self, server: Server) -> bool:
        return False

    def assignment_changed(self, server_id: ServerId) -> None:
        self._on_assignment(server_id)
