"""Which repository settings a URI uses, whether it may be fetched at all, and the
credentials it carries.

Credentials live only in `Credentials`, whose repr shows which fields are set and never their
values, so a log line or an error that formats one leaks nothing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from tms_core.repos.plain import (
    CREDENTIAL_FIELDS,
    PlainRepository,
    RepositoryFields,
    SettingsFields,
)


class RepositoryError(Exception):
    """A model cannot be fetched; the message names the model's URI (never a credential)
    and says what is wrong. `transient` errors are worth another try."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Refused(RepositoryError):
    """The URI is outside what the administrator allows (not worth another try)."""


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    token: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:
        held = [f.name for f in fields(self) if getattr(self, f.name)]
        return f"Credentials({', '.join(held) or 'none'}: values hidden)"

    __str__ = __repr__

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Resolved:
    """A model URI's repository: its settings (defaults where none matches) and credentials."""

    repository: RepositoryFields
    credentials: Credentials


# Cloud metadata services outside the link-local ranges (and the IPv6 one of AWS).
_METADATA = {
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


def _forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in _METADATA


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def normalise_prefix(prefix: str) -> str:
    parts = urlsplit(prefix)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"


class Policy:
    """The administrator's rules over model URIs (the `repositories` settings), applied alike
    by the daemon's presence check and by the sidecars' fetches."""

    def __init__(self, settings: SettingsFields, *, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self._env = os.environ if env is None else env
        self._secrets: dict[str, dict[str, str]] | None = None

    def _secret(self, name: str) -> dict[str, str]:
        if self._secrets is None:
            path = self.settings.secrets_file
            self._secrets = _read_secrets(path) if path is not None else {}
        if name not in self._secrets:
            where = self.settings.secrets_file or "(no repositories.secrets_file is set)"
            raise RepositoryError(f"credentials {name!r} are not in the secrets file {where}")
        return self._secrets[name]

    def resolve(self, uri: str) -> Resolved:
        """The settings of the repository whose prefix matches `uri` longest, and its
        credentials (empty when none are configured)."""
        key = normalise_prefix(uri)
        best: RepositoryFields | None = None
        for repo in self.settings.repositories:
            prefix = normalise_prefix(repo.prefix)
            if key.startswith(prefix) and (
                best is None or len(prefix) > len(normalise_prefix(best.prefix))
            ):
                best = repo
        if best is None:
            return Resolved(PlainRepository(prefix=f"{urlsplit(uri).scheme}://"), Credentials())
        values: dict[str, str] = {}
        if best.credentials:
            values.update(
                {
                    k: str(v)
                    for k, v in self._secret(best.credentials).items()
                    if k in CREDENTIAL_FIELDS
                }
            )
        for field, variable in best.credentials_env.items():
            if variable in self._env:
                values[field] = self._env[variable]
        return Resolved(best, Credentials(**values))

    def check_allowed(self, uri: str) -> None:
        """Raises Refused if `uri` is outside the allowlist or its host is a forbidden
        address. A host *name* is not resolved here: the connection resolves it once and
        checks every address it gets (`addresses`), so an answer that changes between a
        check and a connection (DNS rebinding) cannot reach a refused address."""
        allowed = self.settings.allowed_prefixes
        if allowed:
            key = normalise_prefix(uri)
            if not any(key.startswith(normalise_prefix(p)) for p in allowed):
                raise Refused(
                    f"{redact(uri)} is not under an allowed repository prefix "
                    f"({', '.join(allowed)}; repositories.allowed_prefixes)"
                )
        parts = urlsplit(uri)
        host = parts.hostname
        if parts.scheme in ("http", "https") and host and _is_address(host):
            self._check_address(host, host)

    def addresses(self, host: str, port: int) -> list[str]:
        """`host` resolved once, every address checked: what a connection may go to (and
        only to). Raises Refused if any address is link-local or a metadata address."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise RepositoryError(f"host {host!r} cannot be resolved ({exc.strerror})") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in found:
            self._check_address(host, address)
        return found

    def _check_address(self, host: str, address: str) -> None:
        if not self.settings.allow_link_local and _forbidden_address(address):
            raise Refused(
                f"host {host!r} resolves to {address}, a link-local or cloud metadata "
                "address; refused (repositories.allow_link_local)"
            )


def redact(uri: str) -> str:
    """`uri` without any user or password it carries, nor its query (signed URLs carry
    their signature there)."""
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    return shown


def _read_secrets(path: Path) -> dict[str, dict[str, str]]:
    # Imported here: only a repository with named credentials needs it (a sidecar fetching
    # file:// models starts its first fetch without it).
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise RepositoryError(f"secrets file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        # The parser's message quotes the offending line, which may hold a secret.
        raise RepositoryError(f"secrets file {path}: not valid YAML") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise RepositoryError(f"secrets file {path}: expected name -> {{field: value}}")
    return {str(k): {str(f): str(v) for f, v in entry.items()} for k, entry in loaded.items()}
