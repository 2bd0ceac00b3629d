"""The routes file: the daemon writes it, the router process reads it.

    {"version": 7, "routes": [{"listen": "127.0.0.1:8100",
                               "backends": ["127.0.0.1:41000", "127.0.0.1:41003"],
                               "tag": "lease l-123 http", "hold": false}]}

The daemon writes the whole table each time with `write_routes` (atomically, so the router
never reads half a file) and then waits until `read_applied` returns that version. A route may
have no backends: its address stays bound and each connection to it is closed at once, so a
lease between servers keeps its address. A route with `hold` (a lease waiting for its models,
as while its crashed server restarts) holds new connections instead, for a bounded time, and
forwards them once the table gives it backends. A route with `wake` (a parked lease) holds
them too and asks the daemon to wake the lease; `error` (with `error_at`, which tells one
failed wake from the next) answers the connections held when it came, in the route's
`protocol`. Everything here is standard library only, because
the router must start fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROUTE_FIELDS = {
    "listen",
    "backends",
    "tag",
    "hold",
    "wake",
    "protocol",
    "hold_s",
    "error",
    "error_at",
    "lease",
}
PROTOCOLS = ("", "http", "grpc")
_FILE_FIELDS = {"version", "routes"}


class RoutesError(ValueError):
    """The routes file is malformed; the message is one line that names the field at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Route:
    """One stable address and the servers its new connections are spread over."""

    listen: str
    """`HOST:PORT` the router binds; stays the same while the lease (or lease name) lives."""
    backends: tuple[str, ...]
    """`HOST:PORT` of each Triton endpoint, tried round-robin; may be empty."""
    tag: str = ""
    """Free text for logs, such as `lease l-123 http`."""
    hold: bool = False
    """Its backends are coming (the lease is loading): new connections wait for them, up to
    the router's hold time, rather than being closed."""
    wake: bool = False
    """The lease is parked: a new connection is held and asks the daemon to wake it."""
    protocol: str = ""
    """`http` or `grpc`: what a refusal is written in ("": the connection is just closed)."""
    hold_s: float = 0.0
    """How long a connection is held here; 0: the router's own hold time."""
    error: str = ""
    """Why the lease's wake failed: the connections held when it came are answered with it."""
    error_at: float = 0.0
    """Which failure `error` is (a new one has a new value): held connections answer once."""
    lease: str = ""
    """The lease the address is for, where the wake asker names leases rather than addresses
    (`--wake-grpc`: the Kubernetes activator); "": the asker sends the address."""


@dataclass(frozen=True)
class RouteTable:
    version: int
    """Chosen by the daemon; the router echoes it into the applied file once it is in force."""
    routes: tuple[Route, ...]


def split_address(text: str) -> tuple[str, int]:
    """`"127.0.0.1:80"` or `"[::1]:80"` as `(host, port)`; ValueError says what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host goes in brackets, as [::1]:PORT; got {text!r}")
    if not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RoutesError(field, f"expected a string HOST:PORT, got {type(value).__name__}")
    try:
        split_address(value)
    except ValueError as exc:
        raise RoutesError(field, str(exc)) from None
    return value


def _route(value: Any, field: str) -> Route:
    if not isinstance(value, dict):
        raise RoutesError(field, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - _ROUTE_FIELDS)
    if unknown:
        raise RoutesError(f"{field}.{unknown[0]}", "unknown field")
    if "listen" not in value:
        raise RoutesError(f"{field}.listen", "missing")
    listen = _address(value["listen"], f"{field}.listen")
    backends = value.get("backends")
    if not isinstance(backends, list):
        got = "nothing" if backends is None else type(backends).__name__
        raise RoutesError(f"{field}.backends", f"expected a list of HOST:PORT, got {got}")
    tag = value.get("tag", "")
    if not isinstance(tag, str):
        raise RoutesError(f"{field}.tag", f"expected a string, got {type(tag).__name__}")
    hold = value.get("hold", False)
    if not isinstance(hold, bool):
        raise RoutesError(f"{field}.hold", f"expected true or false, got {hold!r}")
    wake = value.get("wake", False)
    if not isinstance(wake, bool):
        raise RoutesError(f"{field}.wake", f"expected true or false, got {wake!r}")
    protocol = value.get("protocol", "")
    if protocol not in PROTOCOLS:
        raise RoutesError(f"{field}.protocol", f'expected http, grpc or "", got {protocol!r}')
    numbers = {key: value.get(key, 0.0) for key in ("hold_s", "error_at")}
    for key, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise RoutesError(f"{field}.{key}", f"expected a number >= 0, got {number!r}")
    error = value.get("error", "")
    if not isinstance(error, str):
        raise RoutesError(f"{field}.error", f"expected a string, got {type(error).__name__}")
    lease = value.get("lease", "")
    if not isinstance(lease, str):
        raise RoutesError(f"{field}.lease", f"expected a string, got {type(lease).__name__}")
    return Route(
        listen=listen,
        backends=tuple(
            _address(backend, f"{field}.backends[{i}]") for i, backend in enumerate(backends)
        ),
        tag=tag,
        hold=hold,
        wake=wake,
        protocol=protocol,
        hold_s=float(numbers["hold_s"]),
        error=error,
        error_at=float(numbers["error_at"]),
        lease=lease,
    )


def parse_routes(text: str) -> RouteTable:
    """The table in `text`, or RoutesError; unknown fields are errors, so typos do not pass."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RoutesError("file", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RoutesError("file", f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FILE_FIELDS)
    if unknown:
        raise RoutesError(unknown[0], "unknown field")
    version = data.get("version")
    # bool is an int to Python, but `true` is not a version.
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RoutesError("version", f"expected an integer >= 0, got {version!r}")
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list):
        got = "nothing" if raw_routes is None else type(raw_routes).__name__
        raise RoutesError("routes", f"expected a list, got {got}")
    routes = tuple(_route(value, f"routes[{i}]") for i, value in enumerate(raw_routes))
    first_index: dict[str, int] = {}
    for i, route in enumerate(routes):
        if route.listen in first_index:
            raise RoutesError(
                f"routes[{i}].listen",
                f"{route.listen} is already routes[{first_index[route.listen]}].listen",
            )
        first_index[route.listen] = i
    return RouteTable(version=version, routes=routes)


def load_routes(path: Path) -> RouteTable:
    """The table in the file at `path`; a file that cannot be read is a RoutesError too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesError("file", f"cannot read {path}: {exc}") from None
    return parse_routes(text)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` so that a reader sees the old file or the new one, never a part.

    The temporary file sits beside `path` (same filesystem, so `os.replace` is a rename).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_routes(path: Path, version: int, routes: Iterable[Route]) -> None:
    """Writes the table for the router; raises RoutesError, before writing, if it would reject it.

    The router keeps its last good table when it reads a bad one, so checking here is what
    turns a daemon bug into an error the daemon sees rather than a stale router.
    """
    write_atomic(path, routes_text(version, routes) + "\n")


def routes_text(version: int, routes: Iterable[Route]) -> str:
    """The routes file's text for `routes`; RoutesError if the router would reject it."""
    text = json.dumps(
        {
            "version": version,
            "routes": [_route_json(r) for r in routes],
        },
        indent=1,
    )
    parse_routes(text)
    return text


def _route_json(route: Route) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": route.listen,
        "backends": list(route.backends),
        "tag": route.tag,
        "hold": route.hold,
    }
    # The rest only where set: a table without parked leases reads as it always did.
    for key, default in (
        ("wake", False),
        ("protocol", ""),
        ("hold_s", 0.0),
        ("error", ""),
        ("error_at", 0.0),
        ("lease", ""),
    ):
        if getattr(route, key) != default:
            data[key] = getattr(route, key)
    return data


def applied_path(routes_path: Path) -> Path:
    """Where the router reports the version in force unless told otherwise: `<routes>.applied`."""
    return routes_path.with_name(routes_path.name + ".applied")


def read_applied(path: Path) -> int | None:
    """The version the router last put in force, or None if it has not written one yet."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
