"""The interface between the lease manager and whatever runs Triton servers."""

from __future__ import annotations

from typing import Protocol

from tms_core.domain import Server
from tms_core.ids import ServerId


class Backend(Protocol):
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
