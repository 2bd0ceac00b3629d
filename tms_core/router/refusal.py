"""Answers for connections the router cannot forward, in the protocol their client speaks.

A connection held for a parked lease whose wake failed (or that waited past its hold time)
deserves an error its client can show, not a closed socket that reads as a network fault:
HTTP gets `503 Service Unavailable` with Triton's own error body (`{"error": "..."}`, which
`tritonclient.http` raises as the message), gRPC gets the call's trailers with status
`UNAVAILABLE` and the message (which `tritonclient.grpc` raises). The router stays blind to
the protocol otherwise: these functions read only what the client sent before its answer.

`Refusal` holds no socket: fed what the client sent so far, it says what to send now and
whether the answer is complete. Standard library only, as the rest of the router.
"""

from __future__ import annotations

import json
import struct

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
_HEADERS, _SETTINGS, _GOAWAY = 0x1, 0x4, 0x7
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
GRPC_UNAVAILABLE = 14
MAX_REQUEST = 1 << 20
"""Bytes of a request read at most before answering (a large tensor is not waited for)."""


class Refusal:
    """The answer to one connection, fed what its client has sent so far."""

    def __init__(self, protocol: str, message: str) -> None:
        self.protocol = protocol
        self.message = message
        self._greeted = False

    def feed(self, received: bytes, *, final: bool = False) -> tuple[bytes, bool]:
        """What to send now, and whether that is the whole answer (then close); `final`:
        no more will be read, answer with what there is."""
        if self.protocol == "http":
            answer = _http(received, self.message, final=final)
            return (b"", False) if answer is None else (answer, True)
        if self.protocol == "grpc":
            return self._grpc(received, final=final)
        return b"", True

    def _grpc(self, received: bytes, *, final: bool) -> tuple[bytes, bool]:
        if not received.startswith(HTTP2_PREFACE[: len(received)]):
            return b"", True  # not HTTP/2: nothing it would understand
        out = []
        if not self._greeted and len(received) >= len(HTTP2_PREFACE):
            # A gRPC client sends its call only once the server's settings have come: ours
            # (none), and its own acknowledged.
            self._greeted = True
            out += [_frame(_SETTINGS, 0, 0, b""), _frame(_SETTINGS, _ACK, 0, b"")]
        streams = _streams(received[len(HTTP2_PREFACE) :])
        if not streams and not final:
            return b"".join(out), False
        block = (
            b"\x88"  # :status 200 (HPACK static table, index 8)
            + _literal(b"content-type", b"application/grpc")
            + _literal(b"grpc-status", str(GRPC_UNAVAILABLE).encode())
            + _literal(b"grpc-message", _percent(self.message))
        )
        # Each call's trailers (a trailers-only answer), then goodbye.
        for stream in streams:
            out.append(_frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, block))
        out.append(_frame(_GOAWAY, 0, 0, struct.pack(">II", max(streams, default=0), 0)))
        return b"".join(out), True


def _http(received: bytes, message: str, *, final: bool) -> bytes | None:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep and not final and len(received) < MAX_REQUEST:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    # The body is read before answering: closing on unread bytes resets the connection, and
    # the client would see that instead of the answer.
    if sep and len(body) < min(length, MAX_REQUEST) and not final:
        return None
    payload = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + payload
    )


def _streams(frames: bytes) -> list[int]:
    """The streams the client opened (HEADERS frames) among the whole frames received."""
    streams: list[int] = []
    at = 0
    while at + _FRAME_HEADER <= len(frames):
        length = int.from_bytes(frames[at : at + 3], "big")
        kind = frames[at + 3]
        stream = int.from_bytes(frames[at + 5 : at + 9], "big") & 0x7FFFFFFF
        if at + _FRAME_HEADER + length > len(frames):
            break
        if kind == _HEADERS and stream and stream not in streams:
            streams.append(stream)
        at += _FRAME_HEADER + length
    return streams


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + (payload)
    )


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's integer encoding (RFC 7541, 5.1), `first` holding the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field without indexing, with a literal name (RFC 7541, 6.2.2)."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


def _percent(message: str) -> bytes:
    """gRPC's percent-encoding of grpc-message: printable ASCII but '%' as it is."""
    return b"".join(
        bytes([byte]) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in message.encode()
    )
