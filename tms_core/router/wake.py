"""The router's word to the daemon that a connection waits at a parked lease's address.

One datagram per ask, holding the address (`127.0.0.1:8100`), over a Unix datagram socket in
Linux's abstract namespace named after the daemon's state directory: no file to clean up and
no path-length limit, whatever the state directory. The daemon reads each sender's
credentials from the kernel (`SO_PASSCRED`) and takes asks only from its own user, so another
local user cannot wake leases. A lost datagram costs nothing: a held connection asks again
every second. Standard library only, as the rest of the router.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
MAX_ASK = 256


def socket_name(state_dir: Path) -> str:
    """The socket's name for a daemon's state directory, `@` standing for the namespace."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:20]
    return f"@tms-wake-{digest}"


def _address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


def sender(name: str) -> Callable[[str], None]:
    """The router's side: sends each address to wake to the socket `name`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    address = _address(name)

    def wake(listen: str) -> None:
        try:
            sock.sendto(listen.encode()[:MAX_ASK], address)
        except OSError as exc:
            # The daemon is down or restarting: held connections wait on and ask again each
            # second (proxy.WAKE_EVERY_S), so a daemon that starts again hears of them.
            log.warning("%s: cannot ask %s for a wake: %s", listen, name, exc)

    return wake


class WakeListener:
    """The daemon's side: calls `on_ask(port)` for each ask from a process of its own user."""

    def __init__(self, name: str, on_ask: Callable[[int], None]) -> None:
        self.name = name
        self._on_ask = on_ask
        self._sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(_address(self.name))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(
                    MAX_ASK, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            uid = next(
                (
                    _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])[1]
                    for level, kind, payload in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                ),
                None,
            )
            if uid != os.getuid():
                log.warning("wake ask from uid %s ignored: not this daemon's user", uid)
                continue
            _, _, port_text = data.decode(errors="replace").rpartition(":")
            if not port_text.isdigit():
                log.warning("wake ask %r ignored: not HOST:PORT", data[:64])
                continue
            self._on_ask(int(port_text))
