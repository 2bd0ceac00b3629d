"""The router at a parked lease's address: it holds connections, asks for a wake, forwards
them once the lease serves, and answers them, in their protocol, when the wake fails."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.unit.test_router import (  # noqa: F401 - `backends` is a fixture
    HOST,
    Backend,
    Client,
    addr,
    backends,
    free_port,
    port_of,
    wait_until,
)
from tms_core.router.proxy import Router
from tms_core.router.refusal import HTTP2_PREFACE, Refusal
from tms_core.router.routes import Route, parse_routes, write_routes

REQUEST = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def parked(
    listen: str,
    protocol: str = "http",
    *,
    hold_s: float = 0.0,
    error: str = "",
    error_at: float = 0.0,
) -> Route:
    return Route(
        listen,
        (),
        f"lease l-1 {protocol}",
        wake=True,
        protocol=protocol,
        hold_s=hold_s,
        error=error,
        error_at=error_at,
    )


async def test_a_connection_at_a_parked_address_asks_for_a_wake_and_is_forwarded(
    backends: Callable[[str], Awaitable[Backend]],  # noqa: F811 - the fixture
) -> None:
    asked: list[str] = []
    listen = addr(free_port())
    router = Router(wake=asked.append)
    a = await backends("a")
    try:
        await router.apply([parked(listen)])
        opening = asyncio.create_task(Client.open(port_of(listen)))
        await wait_until(lambda: router.held_connections(listen) == 1, "the connection held")
        assert asked == [listen]
        # The lease is placed (held still), then READY: the connection goes through.
        await router.apply([Route(listen, (), "lease l-1 http", hold=True, protocol="http")])
        await router.apply([Route(listen, (a.address,), "lease l-1 http", protocol="http")])
        client = await asyncio.wait_for(opening, 5)
        assert client.name == "a" and await client.echo(b"woken") == b"woken"
        client.close()
    finally:
        await router.close(grace=0.1)


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    answer = await asyncio.wait_for(reader.read(), 5)
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


async def test_a_failed_wake_answers_the_held_http_requests_once() -> None:
    listen = addr(free_port())
    router = Router(wake=lambda _: None)
    try:
        await router.apply([parked(listen)])
        reader, writer = await asyncio.open_connection(HOST, port_of(listen))
        writer.write(REQUEST)
        await wait_until(lambda: router.held_connections(listen) == 1, "the first held")
        await router.apply([parked(listen, error="wake failed: no room", error_at=10.0)])
        status, body = await read_answer(reader)
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert body == {"error": "wake failed: no room"}
        # A connection that comes after the failure asks again; the old failure is not its.
        later_reader, later = await asyncio.open_connection(HOST, port_of(listen))
        later.write(REQUEST)
        await wait_until(lambda: router.held_connections(listen) == 1, "the second held")
        await router.apply([parked(listen, error="wake failed: no room", error_at=10.0)])
        await asyncio.sleep(0.3)  # the table that did not change answers nothing
        assert router.held_connections(listen) == 1
        await router.apply([parked(listen, error="wake failed: still none", error_at=11.0)])
        assert (await read_answer(later_reader))[1] == {"error": "wake failed: still none"}
        writer.close()
        later.close()
    finally:
        await router.close(grace=0.1)


async def test_a_hold_that_runs_out_is_answered_and_a_full_address_refuses_at_once() -> None:
    listen = addr(free_port())
    router = Router(wake=lambda _: None, hold_max=1)
    try:
        await router.apply([parked(listen, hold_s=0.5)])
        reader, writer = await asyncio.open_connection(HOST, port_of(listen))
        writer.write(REQUEST)
        await wait_until(lambda: router.held_connections(listen) == 1, "the first held")
        full_reader, full = await asyncio.open_connection(HOST, port_of(listen))
        full.write(REQUEST)
        assert "1 connections wait already" in (await read_answer(full_reader))[1]["error"]
        assert (await read_answer(reader))[1] == {
            "error": "lease l-1 http: no server took it within 0.5s"
        }
        writer.close()
        full.close()
    finally:
        await router.close(grace=0.1)


async def test_a_failed_wake_answers_a_held_grpc_call_with_unavailable() -> None:
    listen = addr(free_port())
    router = Router(wake=lambda _: None)
    outcome: list[grpc.RpcError] = []

    def call() -> None:
        with grpc.insecure_channel(listen) as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            except grpc.RpcError as exc:
                outcome.append(exc)

    try:
        await router.apply([parked(listen, "grpc")])
        caller = threading.Thread(target=call)
        caller.start()
        await wait_until(lambda: router.held_connections(listen) == 1, "the call held")
        await router.apply([parked(listen, "grpc", error="wake failed: ünïcode", error_at=1.0)])
        await wait_until(lambda: not caller.is_alive(), "the call to end")
        [error] = outcome
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "wake failed: ünïcode"
    finally:
        await router.close(grace=0.1)


def test_an_http_answer_waits_for_the_whole_request() -> None:
    refusal = Refusal("http", "no")
    assert refusal.feed(REQUEST[:-2]) == (b"", False)
    answer, done = refusal.feed(REQUEST)
    assert done and answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b'{"error": "no"}')
    # A client that sends nothing is answered when reading ends.
    assert Refusal("http", "no").feed(b"", final=True)[1]


def test_a_grpc_answer_greets_first_then_ends_each_call() -> None:
    refusal = Refusal("grpc", "x" * 300)  # a message past HPACK's one-byte length
    greeting, done = refusal.feed(HTTP2_PREFACE)
    assert not done and greeting == bytes.fromhex("000000040000000000000000040100000000")
    headers = bytes.fromhex("000001010400000001") + b"\x88"
    rest, done = refusal.feed(HTTP2_PREFACE + headers)
    # One HEADERS frame ending stream 1; the message's length (300) in HPACK's integer
    # form: the 7-bit prefix full (127), then 173 in 7-bit groups.
    assert done and rest[3:9] == bytes.fromhex("010500000001")
    assert b"grpc-message\x7f\xad\x01" + b"x" * 300 in rest
    assert Refusal("grpc", "no").feed(b"GET / HTTP/1.1\r\n") == (b"", True)


def test_parked_routes_round_trip_and_bad_fields_are_named(tmp_path: Path) -> None:
    route = parked("127.0.0.1:9000", "grpc", hold_s=120.0, error="wake failed: x", error_at=5.0)
    path = tmp_path / "routes.json"
    write_routes(path, 3, [route])
    assert parse_routes(path.read_text()).routes == (route,)
    bad = {"listen": "127.0.0.1:1", "backends": [], "protocol": "ftp"}
    with pytest.raises(ValueError, match=r"routes\[0\].protocol: expected http, grpc"):
        parse_routes(json.dumps({"version": 1, "routes": [bad]}))
    bad = {"listen": "127.0.0.1:1", "backends": [], "hold_s": -1}
    with pytest.raises(ValueError, match=r"routes\[0\].hold_s: expected a number >= 0"):
        parse_routes(json.dumps({"version": 1, "routes": [bad]}))
