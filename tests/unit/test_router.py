"""The router: the routes file's validation, then the real process against small echo backends.

Each backend greets a connection with its name on one line and then echoes every byte, passing
a half-close back; so a client learns which server the router picked and can check a round
trip. The router runs as `python -m tms_core.router`, as the daemon will run it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tms_core.router.proxy import Router
from tms_core.router.routes import (
    Route,
    RoutesError,
    load_routes,
    parse_routes,
    read_applied,
    write_routes,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def addr(port: int) -> str:
    return f"{HOST}:{port}"


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], what: str, *, within: float = 5.0
) -> None:
    """Polls `check` (plain or async) until it holds; fails naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


# --- the routes file ---------------------------------------------------------------------


def table(*routes: object, version: int = 1) -> str:
    return json.dumps({"version": version, "routes": list(routes)})


def test_parse_accepts_a_table() -> None:
    parsed = parse_routes(
        table(
            {"listen": "127.0.0.1:8100", "backends": ["127.0.0.1:1", "[::1]:2"], "tag": "l-1 http"},
            {"listen": "[::1]:8101", "backends": []},
            version=7,
        )
    )
    assert parsed.version == 7
    assert parsed.routes == (
        Route("127.0.0.1:8100", ("127.0.0.1:1", "[::1]:2"), "l-1 http"),
        Route("[::1]:8101", (), ""),
    )


GOOD: dict[str, object] = {"listen": "127.0.0.1:8100", "backends": ["127.0.0.1:9000"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "file: not JSON"),
        ("[]", "file: expected a JSON object, got list"),
        (json.dumps({"routes": []}), "version: expected an integer >= 0, got None"),
        (json.dumps({"version": True, "routes": []}), "version: expected an integer"),
        (json.dumps({"version": -1, "routes": []}), "version: expected an integer"),
        (json.dumps({"version": 1}), "routes: expected a list, got nothing"),
        (json.dumps({"version": 1, "routes": [], "extra": 1}), "extra: unknown field"),
        (table(GOOD, "x"), "routes[1]: expected an object, got str"),
        (table(GOOD, {"backends": []}), "routes[1].listen: missing"),
        (table(GOOD, {"listen": "127.0.0.1", "backends": []}), "routes[1].listen: expected HOST"),
        (table(GOOD, {"listen": 8100, "backends": []}), "routes[1].listen: expected a string"),
        (table({"listen": "h:0", "backends": []}), "routes[0].listen: port must be 1-65535"),
        (table({"listen": "h:65536", "backends": []}), "routes[0].listen: port must be"),
        (table({"listen": "h:x1", "backends": []}), "routes[0].listen: expected HOST:PORT"),
        (table({"listen": "::1:80", "backends": []}), "routes[0].listen: an IPv6 host goes in"),
        (table({"listen": "h:1"}), "routes[0].backends: expected a list of HOST:PORT, got nothing"),
        (table({"listen": "h:1", "backends": "h:2"}), "routes[0].backends: expected a list"),
        (table({"listen": "h:1", "backends": ["h:2", ":3"]}), "routes[0].backends[1]: expected"),
        (table({"listen": "h:1", "backends": [2]}), "routes[0].backends[0]: expected a string"),
        (table({"listen": "h:1", "backends": [], "tag": 3}), "routes[0].tag: expected a string"),
        (table({"listen": "h:1", "bakends": []}), "routes[0].bakends: unknown field"),
        (table({"listen": "h:1", "backends": [], "hold": 1}), "routes[0].hold: expected true"),
        (table(GOOD, {**GOOD, "tag": "again"}), "routes[1].listen: 127.0.0.1:8100 is already"),
    ],
)
def test_parse_names_the_bad_field_in_one_line(text: str, message: str) -> None:
    with pytest.raises(RoutesError) as caught:
        parse_routes(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_write_routes_round_trips_atomically_and_refuses_what_the_router_would(
    tmp_path: Path,
) -> None:
    path = tmp_path / "routes.json"
    routes = [
        Route("127.0.0.1:8100", ("127.0.0.1:9000", "127.0.0.1:9001"), "lease l-1 http"),
        Route("127.0.0.1:8101", (), "lease l-2 http", hold=True),
    ]
    write_routes(path, 3, routes)
    loaded = load_routes(path)
    assert (loaded.version, loaded.routes) == (3, tuple(routes))
    with pytest.raises(RoutesError, match=r"routes\[0\]\.backends\[0\]"):
        write_routes(path, 4, [Route("127.0.0.1:8100", ("nowhere",), "")])
    assert load_routes(path).version == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json"]
    with pytest.raises(RoutesError, match=r"^file: cannot read"):
        load_routes(tmp_path / "missing.json")
    assert read_applied(tmp_path / "routes.json.applied") is None


# --- helpers: echo backends, clients, the router process ---------------------------------


class Backend:
    """Greets with its name, then echoes; passes a half-close back once the echo is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()

    @property
    def address(self) -> str:
        return addr(self.port)

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing a connection ends its handler (its read sees EOF), so none is left pending.
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            writer.write(f"{self.name}\n".encode())
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)


class Client:
    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.name = name
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port)
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.endswith(b"\n"), f"no greeting through port {port}, got {line!r}"
        return cls(line.decode().strip(), reader, writer)

    async def echo(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readexactly(len(data)), 5)

    def close(self) -> None:
        self.writer.close()


async def greeting(port: int) -> str:
    client = await Client.open(port)
    client.close()
    return client.name


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[str], Awaitable[Backend]]]:
    started: list[Backend] = []

    async def start(name: str) -> Backend:
        backend = Backend(name)
        await backend.start()
        started.append(backend)
        return backend

    try:
        yield start
    finally:
        for backend in started:
            await backend.stop()


class RouterProcess:
    def __init__(self, tmp_path: Path, loop: str = "auto") -> None:
        self.loop = loop
        self.routes = tmp_path / "routes.json"
        self.applied = tmp_path / "routes.json.applied"
        self.log = tmp_path / "router.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = 0

    def write(self, *routes: Route) -> int:
        self.version += 1
        write_routes(self.routes, self.version, routes)
        return self.version

    async def start(self, *routes: Route) -> None:
        version = self.write(*routes)
        self._spawn()
        await self.wait_applied(version)

    def _spawn(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tms_core.router",
                    "--routes",
                    str(self.routes),
                    f"--loop={self.loop}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

    async def wait_applied(self, version: int) -> None:
        await wait_until(lambda: read_applied(self.applied) == version, f"version {version}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["uvloop", "asyncio"])
def router(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RouterProcess]:
    """The router process on each event loop it runs on: uvloop where installed (the
    default), asyncio's own otherwise."""
    process = RouterProcess(tmp_path, request.param)
    try:
        yield process
    finally:
        process.stop()
        if process.proc is not None:
            log = process.log_text()
            sys.stderr.write(log)  # shown by pytest when the test failed
            assert "Traceback" not in log


# --- end to end ------------------------------------------------------------------------------


async def test_bytes_round_trip_large_payload_and_half_close(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a = await backends("a")
    listen = free_port()
    await router.start(Route(addr(listen), (a.address,), "lease l-1 http"))

    client = await Client.open(listen)
    assert client.name == "a"
    assert await client.echo(b"ping") == b"ping"

    payload = os.urandom(4 * 1024 * 1024)

    async def send_then_half_close() -> None:
        client.writer.write(payload)
        await client.writer.drain()
        client.writer.write_eof()

    sender = asyncio.create_task(send_then_half_close())
    # The backend echoes all of it and only then closes its side: EOF arrives after the data.
    received = await asyncio.wait_for(client.reader.read(), 10)
    await sender
    assert len(received) == len(payload)
    assert received == payload
    client.close()


async def test_new_connections_alternate_over_the_backends(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a, b = await backends("a"), await backends("b")
    listen = free_port()
    await router.start(Route(addr(listen), (a.address, b.address), "lease l-1 http"))

    names = [await greeting(listen) for _ in range(6)]
    assert Counter(names) == {"a": 3, "b": 3}
    assert all(first != second for first, second in itertools.pairwise(names))


async def test_repointing_moves_new_connections_and_leaves_open_ones(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    old, new = await backends("old"), await backends("new")
    listen = free_port()
    await router.start(Route(addr(listen), (old.address,), "name resnet http"))
    before = await Client.open(listen)
    assert before.name == "old"

    version = router.write(Route(addr(listen), (new.address,), "name resnet http"))
    router.signal(signal.SIGHUP)
    await router.wait_applied(version)

    after = await Client.open(listen)
    assert after.name == "new"
    assert await before.echo(b"still on old") == b"still on old"
    assert await after.echo(b"on new") == b"on new"
    assert (old.accepted, new.accepted) == (1, 1)
    before.close()
    after.close()


async def test_a_refusing_backend_is_skipped(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a = await backends("a")
    listen = free_port()
    dead = addr(free_port())  # nothing listens there: connecting is refused
    await router.start(Route(addr(listen), (dead, a.address), "lease l-1 http"))

    assert [await greeting(listen) for _ in range(4)] == ["a"] * 4
    assert "failed" in router.log_text()


async def test_a_removed_route_stops_accepting_but_its_open_connection_goes_on(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a, b = await backends("a"), await backends("b")
    gone, kept = free_port(), free_port()
    await router.start(
        Route(addr(gone), (a.address,), "l-1"), Route(addr(kept), (b.address,), "l-2")
    )
    open_on_gone = await Client.open(gone)

    version = router.write(Route(addr(kept), (b.address,), "l-2"))
    router.signal(signal.SIGHUP)
    await router.wait_applied(version)

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, gone)
    assert await open_on_gone.echo(b"x" * 100_000) == b"x" * 100_000
    assert await greeting(kept) == "b"
    open_on_gone.close()


async def test_an_invalid_file_keeps_the_last_table_and_a_changed_file_reloads_unsignalled(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a, b = await backends("a"), await backends("b")
    listen = free_port()
    await router.start(Route(addr(listen), (a.address,), "l-1"))

    router.routes.write_text('{"version": 2, "routes": [{"listen": "nowhere"}]}')
    router.signal(signal.SIGHUP)
    await wait_until(lambda: "rejected" in router.log_text(), "the rejection in the log")
    assert "routes[0].listen" in router.log_text()
    assert router.running()
    assert read_applied(router.applied) == 1
    assert await greeting(listen) == "a"

    # No signal this time: the router notices the file changed.
    version = router.write(Route(addr(listen), (b.address,), "l-1"))
    await router.wait_applied(version)
    assert await greeting(listen) == "b"


async def test_a_port_in_use_skips_that_route_and_is_bound_once_freed(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a = await backends("a")
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen()
    busy, free = blocker.getsockname()[1], free_port()
    try:
        await router.start(
            Route(addr(busy), (a.address,), "l-1"), Route(addr(free), (a.address,), "l-2")
        )
        assert await greeting(free) == "a"
        assert f"{addr(busy)} (l-1): cannot listen" in router.log_text()
    finally:
        blocker.close()

    async def busy_port_routes() -> bool:
        try:
            return await greeting(busy) == "a"
        except OSError:
            return False

    await wait_until(busy_port_routes, "the freed port to be bound")


async def test_sigterm_lets_an_open_connection_finish_then_exits_0(
    router: RouterProcess, backends: Callable[[str], Awaitable[Backend]]
) -> None:
    a = await backends("a")
    listen = free_port()
    await router.start(Route(addr(listen), (a.address,), "l-1"))
    client = await Client.open(listen)

    router.signal(signal.SIGTERM)

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection(HOST, listen)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    await wait_until(refused, "the listener to close")
    assert await client.echo(b"in grace") == b"in grace"
    assert router.running()
    client.close()
    started = time.monotonic()
    await wait_until(lambda: not router.running(), "the router to exit", within=3)
    assert time.monotonic() - started < 1.5  # the connection ended it, not the 2 s grace
    assert router.proc is not None and router.proc.returncode == 0


# --- in process -------------------------------------------------------------------------------


async def test_router_counts_connections_and_cuts_them_after_the_grace(
    backends: Callable[[str], Awaitable[Backend]], caplog: pytest.LogCaptureFixture
) -> None:
    a = await backends("a")
    listen = addr(free_port())
    router = Router()
    try:
        assert await router.apply([Route(listen, (a.address,), "l-1")]) == {}
        port = int(listen.rsplit(":", 1)[1])
        first, second = await Client.open(port), await Client.open(port)
        await wait_until(lambda: router.active_connections(listen) == 2, "two connections")
        first.close()
        await wait_until(lambda: router.active_connections(listen) == 1, "one connection")

        await router.apply([])  # removed: no longer counted per route, still open
        assert router.active_connections(listen) == 0
        assert router.active_connections() == 1
        assert await second.echo(b"x") == b"x"
    finally:
        await router.close(grace=0.1)
    assert router.active_connections() == 0
    assert await asyncio.wait_for(second.reader.read(), 5) == b""
    second.close()
    # A connection cut on shutdown is routine, not a traceback from asyncio.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_route_without_backends_closes_each_connection() -> None:
    listen = addr(free_port())
    router = Router()
    try:
        await router.apply([Route(listen, (), "lease between servers")])
        reader, writer = await asyncio.open_connection(HOST, int(listen.rsplit(":", 1)[1]))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await wait_until(lambda: router.active_connections() == 0, "the connection to end")
    finally:
        await router.close(grace=0.1)


async def test_a_client_reset_closes_the_backend_side(
    backends: Callable[[str], Awaitable[Backend]],
) -> None:
    a = await backends("a")
    listen = addr(free_port())
    router = Router()
    try:
        await router.apply([Route(listen, (a.address,), "l-1")])
        client = await Client.open(int(listen.rsplit(":", 1)[1]))
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()  # with linger 0: an RST, not a FIN
        await wait_until(lambda: router.active_connections() == 0, "the router to drop it")
        await wait_until(lambda: a.open_connections == 0, "the backend to see its side closed")
    finally:
        await router.close(grace=0.1)


# --- holding connections for a backend -------------------------------------------------------


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


async def test_a_held_route_forwards_its_connection_once_it_gets_a_backend(
    backends: Callable[[str], Awaitable[Backend]],
) -> None:
    """A lease whose server restarts: its address accepts, waits, then serves, no refusal."""
    a = await backends("a")
    listen = addr(free_port())
    router = Router()
    try:
        await router.apply([Route(listen, (), "lease l-1 http", hold=True)])
        opening = asyncio.create_task(Client.open(port_of(listen)))
        await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
        assert not opening.done()
        await router.apply([Route(listen, (a.address,), "lease l-1 http")])
        client = await asyncio.wait_for(opening, 5)
        assert client.name == "a"
        assert await client.echo(b"after the wait") == b"after the wait"
        assert router.held_connections(listen) == 0
        client.close()
    finally:
        await router.close(grace=0.1)


async def test_a_connection_a_dead_backend_refused_waits_for_the_route_to_move(
    backends: Callable[[str], Awaitable[Backend]],
) -> None:
    """The server died before the daemon re-pointed its route: the connection is held, the
    backend marked down, and the new backend takes the connection once it is listed."""
    dead = addr(free_port())
    listen = addr(free_port())
    router = Router()
    try:
        await router.apply([Route(listen, (dead,), "lease l-1 http")])
        opening = asyncio.create_task(Client.open(port_of(listen)))
        await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
        assert router.down == {("127.0.0.1", port_of(dead))}
        b = await backends("b")
        await router.apply([Route(listen, (b.address,), "lease l-1 http")])
        assert (await asyncio.wait_for(opening, 5)).name == "b"
        assert router.down == set()  # only listed backends can be down
    finally:
        await router.close(grace=0.1)


async def test_a_held_connection_is_closed_when_the_hold_runs_out() -> None:
    listen = addr(free_port())
    router = Router(hold_s=0.3)
    try:
        await router.apply([Route(listen, (), "lease l-1 http", hold=True)])
        reader, writer = await asyncio.open_connection(HOST, port_of(listen))
        await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert router.held_connections(listen) == 0
        writer.close()
    finally:
        await router.close(grace=0.1)


async def test_connections_past_the_hold_limit_are_closed_at_once() -> None:
    listen = addr(free_port())
    router = Router(hold_max=1)
    try:
        await router.apply([Route(listen, (), "lease l-1 http", hold=True)])
        _, first = await asyncio.open_connection(HOST, port_of(listen))
        await wait_until(lambda: router.held_connections(listen) == 1, "the first held")
        reader, second = await asyncio.open_connection(HOST, port_of(listen))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert router.held_connections(listen) == 1
        first.close()
        second.close()
        await wait_until(lambda: router.held_connections(listen) == 0, "the first to go")
    finally:
        await router.close(grace=0.1)


async def test_a_held_connection_whose_route_is_removed_is_closed() -> None:
    listen = addr(free_port())
    router = Router()
    try:
        await router.apply([Route(listen, (), "lease l-1 http", hold=True)])
        reader, writer = await asyncio.open_connection(HOST, port_of(listen))
        await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
        await router.apply([])  # the lease ended
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await router.close(grace=0.1)
