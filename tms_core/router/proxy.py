"""The proxy itself: one asyncio listener per route, bytes piped to a backend chosen per connection.

It is layer 4 on purpose: HTTP/1.1 keep-alive and gRPC (HTTP/2) streams both ride one TCP
connection, so picking the backend when the connection opens and then copying bytes keeps
every request on that connection on one server, and leaves the router blind to the protocol.
`Router.apply` changes the table in place; nothing it does cuts an open connection.

Bytes move in protocol callbacks rather than in tasks reading streams: on a 2-core VM that cut
what the router adds to a small HTTP request from about 145 us to about 95 us at the median
(`benchmarks/router_overhead.py`, direct about 150 us). Reads are the selector transport's, up
to 256 KiB each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from tms_core.router.routes import Route, split_address

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0


@dataclass
class _Listener:
    route: Route
    addresses: tuple[tuple[str, int], ...]
    server: asyncio.Server | None = None
    next_backend: int = 0
    active: int = 0


def _nodelay(transport: asyncio.BaseTransport) -> None:
    # asyncio already sets this on TCP transports; saying so keeps it true if that changes,
    # since Nagle's delay on a small response would dwarf a 0.5 ms request.
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads is written to the other side at once.

    Forwarding inside `data_received`, rather than in a task reading a stream, saves a turn of
    the event loop per chunk, which is most of what a router adds to a small request. Flow
    control is the transports' own: when one side's write buffer fills, the other pauses
    reading. A side reads nothing until `_Connection.link` gives it a peer.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _nodelay(transport)
        transport.pause_reading()
        self.connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        # Half-close: pass the EOF on and keep the other direction flowing until it ends too.
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.eof:
            self.connection.close()
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()
        else:
            self.connection.close()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.connection.side_lost(self, exc)


class _Connection:
    """A client socket, the backend socket chosen for it, and the task that connects the two."""

    def __init__(self, router: Router, listener: _Listener) -> None:
        self.router = router
        self.listener = listener
        self.client = _Side(self)
        self.backend: _Side | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connecting: asyncio.Task[None] | None = None

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.listener.active += 1
            self.router._connections.add(self)
            self._connecting = asyncio.create_task(self._connect_guarded())
        else:
            # Known before `link`, so a client gone in between still gets this socket closed.
            self.backend = side
            if self.client.lost and side.transport is not None:
                side.transport.close()

    def link(self, backend: _Side) -> None:
        assert self.client.transport is not None and backend.transport is not None
        self.client.peer, backend.peer = backend, self.client
        self.client.transport.resume_reading()
        backend.transport.resume_reading()

    def close(self) -> None:
        """Closes both sockets once what is buffered for them is sent."""
        for side in (self.client, self.backend):
            if side is not None and side.transport is not None:
                side.transport.close()

    def abort(self) -> None:
        for side in (self.client, self.backend):
            if side is not None and side.transport is not None:
                side.transport.abort()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if side is self.client and self._connecting is not None:
            self._connecting.cancel()
        other = self.backend if side is self.client else self.client
        if other is not None and other.transport is not None and not other.lost:
            # A reset is passed on as one; a clean close lets the other's last bytes drain.
            if exc is not None:
                log.debug("%s: connection ended: %r", self.listener.route.listen, exc)
                other.transport.abort()
            else:
                other.transport.close()
        if self.client.lost and (self.backend is None or self.backend.lost):
            self.listener.active -= 1
            self.router._connections.discard(self)
            if not self.done.done():
                self.done.set_result(None)

    async def _connect_guarded(self) -> None:
        try:
            await self._connect()
        except Exception:
            # Nobody awaits this task: a bug here must show in the log and not leak sockets.
            log.exception("%s (%s): connecting failed", *_names(self.listener))
            self.abort()

    async def _connect(self) -> None:
        """The next backend round-robin that accepts, trying the others in order after it."""
        listener = self.listener
        addresses = listener.addresses
        loop = asyncio.get_running_loop()
        if not addresses:
            log.warning("%s (%s): no backends; connection closed", *_names(listener))
            self.close()
            return
        start = listener.next_backend % len(addresses)
        listener.next_backend = start + 1
        for i in range(len(addresses)):
            host, port = addresses[(start + i) % len(addresses)]
            try:
                _, backend = await asyncio.wait_for(
                    loop.create_connection(lambda: _Side(self), host, port),
                    self.router.connect_timeout,
                )
            except OSError as exc:  # TimeoutError included
                log.warning(
                    "%s (%s): backend %s:%d failed: %s",
                    *_names(listener),
                    host,
                    port,
                    _reason(exc),
                )
                continue
            self.link(backend)
            return
        log.warning("%s (%s): every backend failed; connection closed", *_names(listener))
        self.close()


class Router:
    """The listeners for one route table; `apply` moves it to the next table."""

    def __init__(self, *, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.connect_timeout = connect_timeout
        self._listeners: dict[str, _Listener] = {}
        # Routes the last table wanted but that could not be bound, with the reason.
        self._unbound: dict[str, tuple[Route, str]] = {}
        self._connections: set[_Connection] = set()

    @property
    def listening(self) -> list[str]:
        return sorted(self._listeners)

    @property
    def unbound(self) -> dict[str, str]:
        """Listen addresses of the current table that are not bound, and why."""
        return {listen: reason for listen, (_, reason) in self._unbound.items()}

    def active_connections(self, listen: str | None = None) -> int:
        """Open connections on the route at `listen`, or on every route (removed ones too)."""
        if listen is None:
            return len(self._connections)
        listener = self._listeners.get(listen)
        return listener.active if listener else 0

    async def apply(self, routes: Iterable[Route]) -> dict[str, str]:
        """Makes `routes` the table; returns the listen addresses it could not bind, and why.

        New addresses are bound, gone ones stop accepting (their connections run on), and kept
        ones take their new backends for the connections they accept from now on.
        """
        wanted = {route.listen: route for route in routes}
        for listen in [listen for listen in self._listeners if listen not in wanted]:
            self._stop_listening(listen)
        failed_before = {listen: reason for listen, (_, reason) in self._unbound.items()}
        self._unbound = {}
        for listen, route in wanted.items():
            listener = self._listeners.get(listen)
            if listener is None:
                await self._listen(route, failed_before.get(listen))
            elif listener.route != route:
                if listener.route.backends != route.backends:
                    log.info(
                        "%s (%s): backends %s -> %s for new connections",
                        listen,
                        route.tag,
                        ",".join(listener.route.backends) or "none",
                        ",".join(route.backends) or "none",
                    )
                listener.route = route
                listener.addresses = tuple(split_address(b) for b in route.backends)
        return self.unbound

    async def rebind(self) -> dict[str, str]:
        """Tries again to bind the addresses that failed (a port in use may have been freed)."""
        for route, reason in list(self._unbound.values()):
            del self._unbound[route.listen]
            await self._listen(route, reason)
        return self.unbound

    async def close(self, *, grace: float) -> None:
        """Stops accepting, gives open connections up to `grace` seconds, then cuts the rest."""
        for listen in list(self._listeners):
            self._stop_listening(listen)
        self._unbound = {}
        if not self._connections:
            return
        log.info("waiting up to %.1fs for %d open connections", grace, len(self._connections))
        _, pending = await asyncio.wait({c.done for c in self._connections}, timeout=grace)
        if pending:
            log.info("cutting %d connections still open", len(pending))
            for connection in list(self._connections):
                connection.abort()
            await asyncio.wait(pending, timeout=1.0)

    async def _listen(self, route: Route, failed_with: str | None) -> None:
        listener = _Listener(route, tuple(split_address(b) for b in route.backends))
        host, port = split_address(route.listen)

        loop = asyncio.get_running_loop()
        try:
            listener.server = await loop.create_server(
                lambda: _Connection(self, listener).client, host, port
            )
        except OSError as exc:
            reason = _reason(exc)
            self._unbound[route.listen] = (route, reason)
            # A port in use is retried every second; say so once, not each time.
            if reason != failed_with:
                log.error(
                    "%s (%s): cannot listen: %s; route skipped", route.listen, route.tag, reason
                )
            return
        self._listeners[route.listen] = listener
        log.info(
            "%s (%s): listening, backends %s",
            route.listen,
            route.tag,
            ",".join(route.backends) or "none",
        )

    def _stop_listening(self, listen: str) -> None:
        listener = self._listeners.pop(listen)
        if listener.server is not None:
            # close() only stops accepting; connections already open are not its business.
            listener.server.close()
        log.info(
            "%s (%s): stopped listening; %d open connections run on",
            listen,
            listener.route.tag,
            listener.active,
        )


def _reason(exc: OSError) -> str:
    """`Connection refused` rather than asyncio's `Connect call failed ('127.0.0.1', 80)`."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _names(listener: _Listener) -> tuple[str, str]:
    return listener.route.listen, listener.route.tag
