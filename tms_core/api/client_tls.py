"""What a client trusts and presents on an `https://` target: the daemon's authority, and its
own certificate when the daemon asks for one (mutual TLS, `daemon.tls_client_ca`).

Each file comes from the caller (`--ca`, `--cert`, `--key`; `TmsClient(ca_file=…)`), else the
environment (`TMS_CA_FILE`, `TMS_CERT_FILE`, `TMS_KEY_FILE`); no authority means the system's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV = {"ca": "TMS_CA_FILE", "cert": "TMS_CERT_FILE", "key": "TMS_KEY_FILE"}


class TlsFileError(ValueError):
    """A file named for TLS that cannot be used, said in one line naming where it came from."""


@dataclass(frozen=True)
class ClientTls:
    ca: Path | None = None
    """PEM authorities the daemon's certificate must chain to (None: the system's)."""
    cert: Path | None = None
    """PEM certificate (chain) this client presents."""
    key: Path | None = None
    """PEM private key of `cert`."""

    @classmethod
    def resolve(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> ClientTls:
        """Each file given, else its environment variable."""
        given = {"ca": ca, "cert": cert, "key": key}
        chosen: dict[str, Path | None] = {}
        for name, value in given.items():
            value = value or os.environ.get(ENV[name]) or None
            chosen[name] = Path(value).expanduser() if value else None
        return cls(**chosen)

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise TlsFileError(
                f"a client {given} needs its {missing} too (--{missing} or {ENV[missing]})"
            )
        roots, chain, private = (
            _read("ca", self.ca),
            _read("cert", self.cert),
            _read("key", self.key),
        )
        return grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=private, certificate_chain=chain
        )


def _read(name: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"--{name} / {ENV[name]}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        # grpc would take it and fail every handshake with an unrelated-looking message.
        raise TlsFileError(f"--{name} / {ENV[name]}: {path} is not a PEM file")
    return data


def explain_handshake(target: str, details: str, tls: ClientTls) -> str | None:
    """A person's reading of a failed TLS connection, or None if it was not TLS that failed."""
    lowered = details.lower()
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        trusted = f"the authority in {tls.ca}" if tls.ca else "the system's authorities"
        return (
            f"TLS: the certificate of the daemon at {target} is not signed by {trusted} (or "
            "does not name that host); give its authority with --ca FILE or TMS_CA_FILE"
        )
    # A daemon that refuses the client's certificate (or its absence) closes the connection
    # during the handshake: the client sees only "Socket closed".
    if any(word in lowered for word in ("handshake", "ssl_error", "socket closed")):
        hint = (
            "the daemon may require a client certificate: give one with --cert and --key "
            "(TMS_CERT_FILE, TMS_KEY_FILE)"
            if tls.cert is None
            else f"the daemon may not trust the client certificate {tls.cert}"
        )
        return f"TLS: the daemon at {target} refused the connection ({hint})"
    return None
