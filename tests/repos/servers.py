"""Real servers on 127.0.0.1 for the model repository tests: moto's S3 API (reached through
boto3 like any store, never a stubbed client) and an HTTP server that can ask for auth,
truncate, stall or redirect."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import socket
import ssl
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tms_core.backends.local import free_ports

BOOTSTRAP_KEY = "AKIATMSBOOTSTRAP0000"
BOOTSTRAP_SECRET = "bootstrap-before-auth-is-enforced"


class MotoS3:
    """moto's server in this process; its own credentials are required (IAM checks on)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_ports(1)[0]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        self.server.start()
        self.access_key, self.secret_key = BOOTSTRAP_KEY, BOOTSTRAP_SECRET
        return self

    def enforce_auth(self) -> tuple[str, str]:
        """Makes an IAM user allowed everything on S3, then has moto check every request's
        signature from now on; returns the user's (access key id, secret key)."""
        import json
        import urllib.request

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=BOOTSTRAP_KEY,
            aws_secret_access_key=BOOTSTRAP_SECRET,
        )
        iam.create_user(UserName="tms")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="tms", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="tms")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        return self.access_key, self.secret_key

    def stop(self) -> None:
        self.server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def upload_dir(self, bucket: str, prefix: str, directory: Path) -> None:
        client = self.client()
        for file in sorted(directory.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                key = f"{prefix}/{file.relative_to(directory).as_posix()}"
                client.upload_file(str(file), bucket, key)


def tar_gz(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def tar_of_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file in sorted(directory.rglob("*")):
            if "__pycache__" in file.parts:
                continue
            tar.add(file, arcname=file.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def zip_of_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for file in sorted(directory.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                zipped.write(file, file.relative_to(directory).as_posix())
    return buffer.getvalue()


@dataclass
class Served:
    body: bytes
    etag: str = ""
    truncate_to: int = -1
    """Send only this many bytes of the body (with the full Content-Length)."""
    stall_after: int = -1
    """Send this many bytes, then nothing until the client gives up."""
    redirect: str = ""
    head_length: bool = True
    """Whether HEAD tells the size (False: only the download finds it out)."""
    rate: int = 0
    """Send the body at about this many bytes a second (0: at once), so that a download
    takes long enough for its progress to be seen."""


@dataclass
class HttpRepo:
    """A threaded HTTP server serving `files` (path -> Served), asking for `token` or
    `basic` (user, password) when set."""

    files: dict[str, Served] = field(default_factory=dict)
    token: str = ""
    basic: tuple[str, str] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    """The Host header of each request."""
    tls: ssl.SSLContext | None = None
    """Serve HTTPS with this (server side) context."""

    def start(self) -> HttpRepo:
        repo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                if repo.token:
                    return header == f"Bearer {repo.token}"
                if repo.basic:
                    pair = base64.b64encode(":".join(repo.basic).encode()).decode()
                    return header == f"Basic {pair}"
                return True

            def _answer(self, body: bool) -> None:
                repo.requests.append((self.command, self.path))
                repo.hosts.append(self.headers.get("Host", ""))
                if not self._authorised():
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                served = repo.files.get(self.path)
                if served is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if served.redirect:
                    self.send_response(302)
                    self.send_header("Location", served.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if body or served.head_length:
                    self.send_header("Content-Length", str(len(served.body)))
                else:
                    self.send_header("Content-Length", "0")
                if served.etag:
                    self.send_header("ETag", served.etag)
                self.end_headers()
                if not body:
                    return
                data = served.body
                if served.truncate_to >= 0:
                    self.wfile.write(data[: served.truncate_to])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if served.stall_after >= 0:
                    self.wfile.write(data[: served.stall_after])
                    self.wfile.flush()
                    # Hold the connection open, sending nothing, until the client leaves.
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and not repo._stopping.is_set():
                        repo._stopping.wait(0.05)
                    self.close_connection = True
                    return
                if served.rate:
                    step = max(1, served.rate // 20)
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start : start + step])
                        self.wfile.flush()
                        if repo._stopping.wait(step / served.rate):
                            return
                    return
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self._stopping = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gets(self, path: str) -> int:
        return sum(1 for method, p in self.requests if method == "GET" and p == path)

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


class StallingProxy:
    """A TCP proxy in front of a real server (moto): passes everything through, except that
    the answer to a request whose first line holds `stall_on` stops after `stall_after` bytes
    and the connection then stays silent until the client gives up."""

    def __init__(self, upstream_port: int, stall_on: bytes, stall_after: int = 1024) -> None:
        self.upstream_port = upstream_port
        self.stall_on = stall_on
        self.stall_after = stall_after
        self.stalled = 0
        self._stopping = threading.Event()

    def start(self) -> StallingProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            stalling = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, upstream, stalling), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(upstream, client, stalling), daemon=True
            ).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, stalling: Any) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.stall_on in data.split(b"\r\n", 1)[0]:
                    stalling.set()
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _answers(self, upstream: socket.socket, client: socket.socket, stalling: Any) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if stalling.is_set():
                    room = self.stall_after - sent
                    client.sendall(data[: max(room, 0)])
                    sent += len(data)
                    if sent >= self.stall_after:
                        self.stalled += 1
                        # Silent until the client leaves (or the test ends).
                        self._stopping.wait(60)
                        break
                    continue
                client.sendall(data)
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()


def make_ca(directory: Path, names: list[str]) -> tuple[Path, ssl.SSLContext]:
    """A CA of the test's own (its certificate written to `directory`, for a repository's
    ca_bundle) and a server context whose certificate, signed by it, names `names`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: Any, issuer: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tms test CA")])
    ca_cert = issue("tms test CA", ca_key, ca_name, ca_key, True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = issue(names[0], server_key, ca_name, ca_key, False)
    pem = serialization.Encoding.PEM
    ca_path = directory / "test-ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    chain = directory / "server.pem"
    chain.write_bytes(
        server_cert.public_bytes(pem)
        + server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_path, context


def running(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
