"""The proxy itself: one asyncio listener per route, bytes piped to a backend chosen per connection.

It is layer 4 on purpose: HTTP/1.1 keep-alive and gRPC (HTTP/2) streams both ride one TCP
connection, so picking the backend when the connection opens and then copying bytes keeps
every request on that connection on one server, and leaves the router blind to the protocol.
`Router.apply` changes the table in place; nothing it does cuts an open connection.

A connection that finds no backend to take it is *held* when its route says backends are
coming (`Route.hold`: the lease is loading, as while its crashed server restarts) or when every
backend listed refused it (one just died, and the daemon has yet to re-point the route): it
waits, its client's bytes unread, until the table gives the route a backend that accepts, then
is forwarded as if nothing happened. The wait is bounded in time (`hold_s`, or the route's
own) and in count per address (`hold_max`); past either the connection is closed, as a route
without backends closes every connection, or, where the route names its protocol, answered
with an error its client shows (router/refusal.py). A backend that refused is marked down and
tried last until it accepts again.

A route with `wake` (a parked lease) holds its connections the same way and asks the daemon to
wake the lease (`Router.wake`, a callable given by whoever runs the router); once the table
gives the route backends they are forwarded, and if it brings a new `error` instead (the wake
failed) the connections held by then are answered with it.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from tms_core.router import refusal
from tms_core.router.routes import Route, split_address

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
HOLD_S = 15.0
"""How long a new connection is held for a backend by default: a crashed server's restart and
model loads take seconds; a client waits that long rather than see a refusal."""
HOLD_MAX = 64
"""Connections held at once per address by default; more are closed at once, so a client
retrying in a tight loop cannot pile up sockets in the router."""
RETRY_S = 0.25
"""A held connection tries its backends again this often even when the table has not
changed (a backend that refused once may accept now)."""
WAKE_EVERY_S = 1.0
"""A parked lease's address asks for a wake at most this often while connections come."""
REFUSE_READ_S = 1.0
"""How long a refused connection's request is read before it is answered anyway."""


@dataclass
class _Listener:
    route: Route
    addresses: tuple[tuple[str, int], ...]
    server: asyncio.Server | None = None
    next_backend: int = 0
    active: int = 0
    held: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced) when the route changes: held connections look again."""
    closed: bool = False
    woken_at: float = float("-inf")


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
        self.early: list[bytes] = []
        self.arrived: asyncio.Event | None = None
        """Set as bytes arrive before `link` (a refusal reading the request waits on it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        _nodelay(transport)
        transport.pause_reading()
        self.connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            # Read before `link` (uvloop may deliver what had arrived before the pause took
            # effect): kept, and written once the other side exists.
            self.early.append(data)
            if self.arrived is not None:
                self.arrived.set()
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        # Half-close: pass the EOF on and keep the other direction flowing until it ends too.
        self.eof = True
        if self.arrived is not None:
            self.arrived.set()
        peer = self.peer
        if peer is None and not self.lost:
            return True  # before `link`: passed on there, after what was read early
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
        for side in (self.client, backend):
            early, side.early = side.early, []
            for data in early:
                side.data_received(data)
        for side in (self.client, backend):
            if side.eof:
                side.eof_received()
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
        """A backend that accepts, or, when none does and the route may get one, the wait for
        it (see the module docstring)."""
        listener = self.listener
        router = self.router
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        seen_error = listener.route.error_at
        try:
            while True:
                refused = await self._try_backends()
                if refused is None:
                    return
                route = listener.route
                if deadline is not None and route.error and route.error_at != seen_error:
                    log.warning("%s (%s): answered: %s", *_names(listener), route.error)
                    await self._refuse(route.error)
                    return
                if listener.closed or not (route.hold or route.wake or refused):
                    log.warning("%s (%s): no backends; connection closed", *_names(listener))
                    self.close()
                    return
                now = loop.time()
                hold_s = route.hold_s or router.hold_s
                if deadline is None:
                    if listener.held >= router.hold_max:
                        log.warning(
                            "%s (%s): %d connections held already; connection closed",
                            *_names(listener),
                            listener.held,
                        )
                        await self._refuse(
                            f"{route.tag}: {listener.held} connections wait already; "
                            "try again shortly"
                        )
                        return
                    listener.held += 1
                    deadline = now + hold_s
                    seen_error = route.error_at
                    log.info("%s (%s): holding a connection for a backend", *_names(listener))
                if route.wake and now - listener.woken_at >= WAKE_EVERY_S:
                    listener.woken_at = now
                    router.ask_wake(route.listen)
                if now >= deadline:
                    log.warning(
                        "%s (%s): no backend within %.1fs; connection closed",
                        *_names(listener),
                        hold_s,
                    )
                    await self._refuse(f"{route.tag}: no server took it within {hold_s:g}s")
                    return
                try:
                    await asyncio.wait_for(
                        listener.changed.wait(), min(deadline - now, router.retry_s)
                    )
                except TimeoutError:
                    pass
                if self._client_gone():
                    # Its socket is not read while held, so nothing else would notice, and
                    # it would keep a place under `hold_max` until the hold ran out.
                    self.abort()
                    return
        finally:
            if deadline is not None:
                listener.held -= 1

    async def _refuse(self, message: str) -> None:
        """Answers the client with `message` in its route's protocol (read what it sent
        first, for a bounded time), then closes; without a protocol, just closes."""
        protocol = self.listener.route.protocol
        client = self.client
        if not protocol or client.transport is None or client.lost:
            self.close()
            return
        loop = asyncio.get_running_loop()
        client.arrived = asyncio.Event()
        client.transport.resume_reading()
        answer = refusal.Refusal(protocol, message)
        give_up = loop.time() + REFUSE_READ_S
        while not client.lost and client.transport is not None:
            final = client.eof or loop.time() >= give_up
            out, done = answer.feed(b"".join(client.early), final=final)
            if out:
                client.transport.write(out)
            if done:
                break
            client.arrived.clear()
            try:
                await asyncio.wait_for(client.arrived.wait(), give_up - loop.time())
            except TimeoutError:
                pass
        self.close()

    def _client_gone(self) -> bool:
        """Whether the held client closed or reset its socket (peeked: its bytes stay queued)."""
        transport = self.client.transport
        if transport is None or self.client.lost:
            return True
        fd = transport.get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            try:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

    async def _try_backends(self) -> bool | None:
        """Links the next backend round-robin that accepts, trying the others after it (those
        marked down last). None once linked; otherwise whether any backend refused."""
        listener = self.listener
        addresses = listener.addresses
        if not addresses:
            return False
        loop = asyncio.get_running_loop()
        down = self.router.down
        start = listener.next_backend % len(addresses)
        listener.next_backend = start + 1
        order = [addresses[(start + i) % len(addresses)] for i in range(len(addresses))]
        order.sort(key=lambda address: address in down)  # stable: up ones keep their turn
        for host, port in order:
            try:
                _, backend = await asyncio.wait_for(
                    loop.create_connection(lambda: _Side(self), host, port),
                    self.router.connect_timeout,
                )
            except OSError as exc:  # TimeoutError included
                if (host, port) not in down:
                    # Said once per outage: a held connection retries every RETRY_S.
                    log.warning(
                        "%s (%s): backend %s:%d failed: %s; marked down",
                        *_names(listener),
                        host,
                        port,
                        _reason(exc),
                    )
                    down.add((host, port))
                continue
            if (host, port) in down:
                down.discard((host, port))
                log.info("%s (%s): backend %s:%d is up", *_names(listener), host, port)
            self.link(backend)
            return None
        return True


class Router:
    """The listeners for one route table; `apply` moves it to the next table."""

    def __init__(
        self,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        hold_s: float = HOLD_S,
        hold_max: int = HOLD_MAX,
        retry_s: float = RETRY_S,
        wake: Callable[[str], None] | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self._wake = wake
        self.hold_s = hold_s
        self.hold_max = hold_max
        self.retry_s = retry_s
        self.down: set[tuple[str, int]] = set()
        """Backends whose last connect failed: tried after the others."""
        self._listeners: dict[str, _Listener] = {}
        # Routes the last table wanted but that could not be bound, with the reason.
        self._unbound: dict[str, tuple[Route, str]] = {}
        self._connections: set[_Connection] = set()

    def set_wake(self, wake: Callable[[str], None]) -> None:
        """Who is told of connections held at parked addresses (see `ask_wake`)."""
        self._wake = wake

    def lease_at(self, listen: str) -> str:
        """The lease of the route at `listen` ("": none named, or no such route)."""
        listener = self._listeners.get(listen)
        return listener.route.lease if listener is not None else ""

    def ask_wake(self, listen: str) -> None:
        """Tells whoever runs the router that a connection waits at a parked lease's address."""
        if self._wake is None:
            log.warning("%s: a parked lease's address, and no one to wake it", listen)
            return
        try:
            self._wake(listen)
        except Exception:
            # The connection still waits for its hold time; the next one asks again.
            log.exception("%s: asking for a wake failed", listen)

    @property
    def listening(self) -> list[str]:
        return sorted(self._listeners)

    @property
    def unbound(self) -> dict[str, str]:
        """Listen addresses of the current table that are not bound, and why."""
        return {listen: reason for listen, (_, reason) in self._unbound.items()}

    def held_connections(self, listen: str) -> int:
        """Connections on the route at `listen` waiting for a backend."""
        listener = self._listeners.get(listen)
        return listener.held if listener else 0

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
                _wake(listener)
        # Only backends still listed can be down; a restarted server comes back on new ports.
        listed = {split_address(b) for route in wanted.values() for b in route.backends}
        self.down &= listed
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
        listener.closed = True
        _wake(listener)
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


def _wake(listener: _Listener) -> None:
    """Wakes the connections held on `listener`; later ones wait on a fresh event."""
    listener.changed.set()
    listener.changed = asyncio.Event()


def _names(listener: _Listener) -> tuple[str, str]:
    return listener.route.listen, listener.route.tag
