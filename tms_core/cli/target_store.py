"""Which daemon a command talks to: `-t`, `$TMS_TARGET`, the saved default, or the local one.

Targets are saved on the client, TMS-style (`tms target add prod 10.0.0.5:30345`), in
`$XDG_CONFIG_HOME/tms/targets.yaml` (`~/.config/tms/targets.yaml`; `$TMS_TARGETS_FILE`
overrides). `-t` and `$TMS_TARGET` take a saved name, `host:port` or `http(s)://host:port`.
A target may be saved with its API token (`tms target add prod HOST:PORT --token …`) and its
TLS files (`--ca`, `--cert`, `--key`: paths, not the files' contents); the file is readable
by its owner only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tms_core.cli.yamlfile import load_yaml
from tms_core.defaults import DEFAULT_LISTEN

DEFAULT_PORT = int(DEFAULT_LISTEN.rpartition(":")[2])
TLS_FILES = ("ca", "cert", "key")
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def targets_file() -> Path:
    if explicit := os.environ.get("TMS_TARGETS_FILE"):
        return Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "tms" / "targets.yaml"


def normalize_address(text: str) -> str:
    """`host:port` from `host:port` or `http://host:port`; `https://host:port` stays so, as
    the client then speaks TLS."""
    stripped = text.strip()
    expected = "expected host:port, http(s)://host:port or a saved target name"
    if "://" in stripped:
        url = urlparse(stripped)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"{text!r}: unsupported scheme {url.scheme!r}; {expected}")
        if url.path not in ("", "/") or url.query or url.fragment or not url.hostname:
            raise ValueError(f"{text!r}: {expected}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"{text!r}: the port is not a number from 1 to 65535") from None
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        return f"https://{host}:{port}" if url.scheme == "https" else f"{host}:{port}"
    host, sep, port_text = stripped.rpartition(":")
    if not sep or not host or any(c.isspace() for c in stripped):
        raise ValueError(f"{text!r}: {expected}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535")
    return f"{host}:{int(port_text)}"


def looks_like_address(text: str) -> bool:
    return ":" in text


def check_name(name: str) -> None:
    if not TARGET_NAME.match(name):
        raise ValueError(
            f"target name {name!r}: use letters, digits, '.', '_' and '-' (at most 63), "
            "starting with a letter or digit"
        )


@dataclass
class Targets:
    """The saved targets and the default one, as kept in the targets file."""

    path: Path
    targets: dict[str, str] = field(default_factory=dict)
    default: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    """API tokens saved with targets, by target name."""
    tls: dict[str, dict[str, str]] = field(default_factory=dict)
    """TLS files saved with targets, by target name: `ca`, `cert`, `key` -> path."""

    @classmethod
    def load(cls, path: Path | None = None) -> Targets:
        path = path or targets_file()
        try:
            data = load_yaml(path)
        except FileNotFoundError:
            return cls(path)
        if data is None:
            return cls(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'targets' and 'default'")
        unknown = sorted(str(k) for k in data if k not in ("targets", "default", "tokens", "tls"))
        if unknown:
            raise ValueError(
                f"{path}: unknown key {unknown[0]!r}; expected targets, default, tokens or tls"
            )
        tls = data.get("tls") or {}
        if not isinstance(tls, dict) or not all(
            isinstance(files, dict)
            and all(k in TLS_FILES and isinstance(v, str) for k, v in files.items())
            for files in tls.values()
        ):
            raise ValueError(f"{path}: 'tls' must map target names to ca, cert and key paths")
        tokens = data.get("tokens") or {}
        if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
        ):
            raise ValueError(f"{path}: 'tokens' must map target names to API tokens")
        saved = data.get("targets") or {}
        if not isinstance(saved, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in saved.items()
        ):
            raise ValueError(f"{path}: 'targets' must map names to host:port")
        default = data.get("default")
        if default is not None and not isinstance(default, str):
            raise ValueError(f"{path}: 'default' must be a target name")
        return cls(path, dict(saved), default or None, dict(tokens), dict(tls))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "default": self.default,
            "targets": dict(sorted(self.targets.items())),
        }
        tokens = {k: v for k, v in sorted(self.tokens.items()) if k in self.targets}
        if tokens:
            data["tokens"] = tokens
        tls = {k: v for k, v in sorted(self.tls.items()) if k in self.targets and v}
        if tls:
            data["tls"] = tls
        import yaml

        text = "# Saved tms targets; edit with `tms target add|remove|set`.\n" + yaml.safe_dump(
            data, sort_keys=False
        )
        import tempfile  # only here: its import is a tenth of a short command's start

        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".targets-", suffix=".yaml")
        try:
            # It may hold API tokens: its owner's only.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def address_of(self, name: str) -> str:
        if name in self.targets:
            return normalize_address(self.targets[name])
        raise ValueError(self.unknown(name))

    def unknown(self, name: str) -> str:
        message = f"no saved target named {name!r}"
        import difflib

        close = difflib.get_close_matches(name, list(self.targets), n=1)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
        if self.targets:
            return f"{message} (saved: {', '.join(sorted(self.targets))})"
        return f"{message}; give HOST:PORT, or save it with `tms target add {name} HOST:PORT`"


def resolve(flag: str | None) -> str:
    """host:port from `-t`, else `$TMS_TARGET`, else the saved default, else the local daemon."""
    return resolve_with_token(flag)[0]


def resolve_with_token(flag: str | None) -> tuple[str, str | None]:
    """The address as `resolve` finds it, with the token saved with that target (if any)."""
    address, name, saved = _resolve(flag)
    return address, saved.tokens.get(name) if saved and name else None


def saved_tls(flag: str | None) -> dict[str, str]:
    """The TLS files saved with the target `resolve` finds (`ca`, `cert`, `key` -> path)."""
    _, name, saved = _resolve(flag)
    return dict(saved.tls.get(name, {})) if saved and name else {}


def _resolve(flag: str | None) -> tuple[str, str | None, Targets | None]:
    """The address, and the saved target's name and file when it came from one."""
    for given in (flag, os.environ.get("TMS_TARGET")):
        if given:
            if looks_like_address(given):
                return normalize_address(given), None, None
            saved = Targets.load()
            return saved.address_of(given), given, saved
    saved = Targets.load()
    if saved.default:
        if saved.default not in saved.targets:
            raise ValueError(
                f"{saved.path}: the default target {saved.default!r} is not among the saved ones"
            )
        return saved.address_of(saved.default), saved.default, saved
    return DEFAULT_LISTEN, None, None
