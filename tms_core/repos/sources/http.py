"""`http://` and `https://` URIs: a model directory packed as `.tar.gz`, `.tgz`, `.tar` or
`.zip`, or a single file (placed as version 1). Bearer-token or basic auth per repository,
and a custom CA bundle.

Redirects are followed only to URIs the policy allows, and credentials go only to the host
they were configured for.

A host name is resolved once per connection, every address it resolves to is checked
(`Policy.addresses`), and the socket goes to one of those checked addresses; the request
keeps the name for its Host header, TLS SNI and the certificate's host name check. So a DNS
answer that changes after the check (rebinding) is never connected to. The same holds for
each redirect, which opens its own connection through the same handlers.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from tms_core.repos.archive import extract, is_archive
from tms_core.repos.plain import SettingsFields
from tms_core.repos.policy import Policy, RepositoryError, Resolved, redact
from tms_core.repos.transfer import ObjectInfo, Transfer, with_retries

CONNECT_TIMEOUT_S = 10.0


def _connect_checked(
    policy: Policy,
    address: tuple[str, int],
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """`socket.create_connection`, but only to the addresses `policy` checked for the host:
    the name is resolved here, once, and never again for this connection."""
    host, port = address
    error: OSError | None = None
    for checked in policy.addresses(host, port):
        try:
            # An address literal: create_connection resolves nothing more.
            return socket.create_connection((checked, port), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error or OSError(f"{host!r} resolved to no address")


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, policy: Policy, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        # http.client's one hook for how the socket is made; self.host stays the name, so
        # the Host header names it.
        self._create_connection = lambda *a: _connect_checked(policy, *a)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, policy: Policy, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        # As above; HTTPSConnection.connect then wraps the socket with server_hostname set
        # to self.host (the name), so SNI and certificate verification use the name.
        self._create_connection = lambda *a: _connect_checked(policy, *a)


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self._policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        policy = self._policy

        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            return _CheckedHTTPConnection(host, policy=policy, **kwargs)

        return self.do_open(connection, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: Policy, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._policy = policy
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        policy, tls = self._policy, self._tls

        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            return _CheckedHTTPSConnection(host, policy=policy, context=tls, **kwargs)

        return self.do_open(connection, req)


def _check_proxied(policy: Policy, uri: str) -> None:
    """Through a proxy (HTTP(S)_PROXY) the proxy resolves the name and connects, and the
    checked connection goes to the proxy: the name is still checked here, once, as far as
    this machine's resolver sees it (the proxy's own answer cannot be pinned)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        policy.addresses(host, parts.port or (443 if parts.scheme == "https" else 80))


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, policy: Policy, origin: str) -> None:
        self._policy = policy
        self._origin = origin

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        self._policy.check_allowed(newurl)
        _check_proxied(self._policy, newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != self._origin:
            new.remove_header("Authorization")
        return new


class HttpSource:
    def __init__(self, resolved: Resolved, settings: SettingsFields) -> None:
        self._resolved = resolved
        self._settings = settings
        self._policy = Policy(settings)
        repo = resolved.repository
        self._context = ssl.create_default_context(cafile=repo.ca_bundle or None)

    def _headers(self) -> dict[str, str]:
        creds = self._resolved.credentials
        if creds.token:
            return {"Authorization": f"Bearer {creds.token}"}
        if creds.username:
            pair = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def _open(self, uri: str, method: str, timeout: float) -> http.client.HTTPResponse:
        self._policy.check_allowed(uri)
        _check_proxied(self._policy, uri)
        opener = urllib.request.build_opener(
            _CheckedHTTPHandler(self._policy),
            _CheckedHTTPSHandler(self._policy, self._context),
            _Redirects(self._policy, urlsplit(uri).netloc),
        )
        request = urllib.request.Request(uri, method=method, headers=self._headers())
        shown = redact(uri)
        try:
            response: http.client.HTTPResponse = opener.open(request, timeout=timeout)
            return response
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (401, 403):
                which = "were refused" if self._headers() else "are needed and none are configured"
                raise RepositoryError(
                    f"{shown}: access denied (HTTP {exc.code}); the credentials of repository "
                    f"{self._resolved.repository.prefix!r} {which}"
                ) from None
            if exc.code == 404:
                raise RepositoryError(f"{shown} does not exist (HTTP 404)") from None
            transient = exc.code >= 500 or exc.code in (408, 429)
            raise RepositoryError(
                f"{shown}: HTTP {exc.code} {exc.reason}", transient=transient
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RepositoryError(
                    f"{shown}: the server's certificate is not trusted ({reason.verify_message});"
                    " set the repository's ca_bundle"
                ) from None
            raise RepositoryError(f"{shown}: cannot connect ({reason})", transient=True) from None
        except TimeoutError:
            raise RepositoryError(
                f"{shown}: no answer within {timeout:.0f}s", transient=True
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise RepositoryError(f"{shown}: connection failed ({exc})", transient=True) from None

    def stat(self, uri: str) -> ObjectInfo:
        timeout = min(self._settings.stall_timeout, CONNECT_TIMEOUT_S)
        try:
            response = self._open(uri, "HEAD", timeout)
        except RepositoryError as exc:
            # Some servers refuse HEAD: ask for the body and read none of it.
            if "HTTP 405" not in str(exc) and "HTTP 501" not in str(exc):
                raise
            response = self._open(uri, "GET", timeout)
        with response:
            length = response.headers.get("Content-Length")
            version = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
        name = PurePosixPath(urlsplit(response.geturl()).path).name or "model"
        kind = "archive" if is_archive(name) or is_archive(urlsplit(uri).path) else "file"
        return ObjectInfo(int(length) if length and length.isdigit() else -1, version, kind)

    def download(self, uri: str, info: ObjectInfo, dest: Path, transfer: Transfer) -> None:
        if info.size >= 0:
            transfer.check_size(info.size)
            transfer.total = info.size
        name = PurePosixPath(urlsplit(uri).path).name or "model"
        target = (
            dest.with_name(dest.name + ".download") if info.kind == "archive" else dest / "1" / name
        )
        target.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> str:
            response = self._open(uri, "GET", self._settings.stall_timeout)
            with response:
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else -1
                try:
                    return transfer.stream_to(response, target, expected=expected)
                except TimeoutError:
                    raise RepositoryError(
                        f"{redact(uri)}: transfer stalled (no byte for "
                        f"{self._settings.stall_timeout:g}s; repositories.stall_timeout)",
                        transient=True,
                    ) from None
                except (ConnectionError, http.client.HTTPException) as exc:
                    raise RepositoryError(
                        f"{redact(uri)}: transfer broke off ({exc})", transient=True
                    ) from None

        try:
            transfer.verify(with_retries(redact(uri), transfer, attempt))
            if info.kind == "archive":
                extract(target, dest, max_bytes=transfer.max_bytes)
        finally:
            if info.kind == "archive":
                target.unlink(missing_ok=True)


def make(resolved: Resolved, settings: SettingsFields) -> HttpSource:
    return HttpSource(resolved, settings)
