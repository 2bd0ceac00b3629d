"""The repository settings as the fetching machinery reads them, and as a sidecar parses them
from the daemon's JSON without pydantic.

A cold lease waits for its sidecar's first fetch, and importing pydantic and building the
settings models took 0.13-0.2 s of that on an idle 2-core machine (Triton is ready in
~0.05 s). So the policy, the fetcher and the sources read settings through the two small
protocols here, which the daemon's pydantic section (`tms_core.repos.settings`, its
configuration file) and the plain dataclasses below both satisfy, and the sidecar parses the
JSON the daemon hands it (`RepositorySettings.to_sidecar_json`) with `parse_settings`: the
same fields, defaults and checks, its errors naming the field and what was expected. This
module imports only the standard library (and `tms_core.units`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from tms_core.units import parse_duration, parse_size

CREDENTIAL_FIELDS = (
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "username",
    "password",
)
ADDRESSING_STYLES = ("", "path", "virtual", "auto")


class RepositoryFields(Protocol):
    """One repository's settings (`tms_core.repos.settings.Repository` documents each)."""

    @property
    def prefix(self) -> str: ...
    @property
    def endpoint_url(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def addressing_style(self) -> str: ...
    @property
    def anonymous(self) -> bool: ...
    @property
    def profile(self) -> str: ...
    @property
    def ca_bundle(self) -> str: ...
    @property
    def credentials(self) -> str: ...
    @property
    def credentials_env(self) -> Mapping[str, str]: ...


class SettingsFields(Protocol):
    """The `repositories` section (`tms_core.repos.settings.RepositorySettings`)."""

    @property
    def repositories(self) -> Sequence[RepositoryFields]: ...
    @property
    def allowed_prefixes(self) -> Sequence[str]: ...
    @property
    def allow_link_local(self) -> bool: ...
    @property
    def secrets_file(self) -> Path | None: ...
    @property
    def max_model_size(self) -> int: ...
    @property
    def stall_timeout(self) -> float: ...
    @property
    def retries(self) -> int: ...
    @property
    def cache_dir(self) -> Path | None: ...
    @property
    def cache_size(self) -> int: ...


@dataclass(frozen=True)
class PlainRepository:
    prefix: str
    endpoint_url: str = ""
    region: str = ""
    addressing_style: str = ""
    anonymous: bool = False
    profile: str = ""
    ca_bundle: str = ""
    credentials: str = ""
    credentials_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlainSettings:
    repositories: Sequence[PlainRepository] = ()
    allowed_prefixes: Sequence[str] = ()
    allow_link_local: bool = False
    secrets_file: Path | None = None
    max_model_size: int = 64 * 1024**3
    stall_timeout: float = 30.0
    retries: int = 4
    cache_dir: Path | None = None
    cache_size: int = 100 * 1024**3


class SettingsError(ValueError):
    """Repository settings that do not parse; the message names the field (`retries`,
    `repositories.0.prefix`) and what was expected."""


def check_prefix(value: str) -> str:
    if "://" not in value:
        raise ValueError(f"{value!r} is not a URI prefix (such as s3://bucket/models/)")
    return value


def check_credentials_env(value: Mapping[str, str]) -> Mapping[str, str]:
    for key in value:
        if key not in CREDENTIAL_FIELDS:
            raise ValueError(f"{key!r} is not a credential field ({', '.join(CREDENTIAL_FIELDS)})")
    return value


def parse_settings(text: str | bytes) -> PlainSettings:
    """The settings in `text`, JSON as `RepositorySettings.to_sidecar_json` writes it (any
    field may be left out for its default). Raises SettingsError."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"not valid JSON ({exc})") from None
    return _settings(data)


def _settings(data: Any) -> PlainSettings:
    values = _object(data, "", PlainSettings)
    if "repositories" in values:
        items = _list(values["repositories"], "repositories")
        values["repositories"] = tuple(
            _repository(item, f"repositories.{i}") for i, item in enumerate(items)
        )
    if "allowed_prefixes" in values:
        items = _list(values["allowed_prefixes"], "allowed_prefixes")
        values["allowed_prefixes"] = tuple(
            _str(item, f"allowed_prefixes.{i}") for i, item in enumerate(items)
        )
    checks: dict[str, Callable[[Any, str], Any]] = {
        "allow_link_local": _bool,
        "secrets_file": _path,
        "cache_dir": _path,
        "max_model_size": _size,
        "cache_size": _size,
        "stall_timeout": _duration,
        "retries": _retries,
    }
    for name, check in checks.items():
        if name in values:
            values[name] = check(values[name], name)
    return PlainSettings(**values)


def _repository(data: Any, where: str) -> PlainRepository:
    values = _object(data, where, PlainRepository)
    if "prefix" not in values:
        raise SettingsError(f"{where}.prefix: a URI prefix is required")
    for name in ("prefix", "endpoint_url", "region", "profile", "ca_bundle", "credentials"):
        if name in values:
            values[name] = _str(values[name], f"{where}.{name}")
    values["prefix"] = _checked(check_prefix, values["prefix"], f"{where}.prefix")
    if "addressing_style" in values:
        style = _str(values["addressing_style"], f"{where}.addressing_style")
        if style not in ADDRESSING_STYLES:
            expected = ", ".join(repr(s) for s in ADDRESSING_STYLES)
            raise SettingsError(f"{where}.addressing_style: expected one of {expected}")
        values["addressing_style"] = style
    if "anonymous" in values:
        values["anonymous"] = _bool(values["anonymous"], f"{where}.anonymous")
    if "credentials_env" in values:
        env = values["credentials_env"]
        name = f"{where}.credentials_env"
        if not isinstance(env, dict):
            raise SettingsError(f"{name}: expected an object (credential field -> variable)")
        env = {key: _str(value, f"{name}.{key}") for key, value in env.items()}
        values["credentials_env"] = _checked(check_credentials_env, env, name)
    return PlainRepository(**values)


def _object(data: Any, where: str, kind: type[Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SettingsError(f"{where or 'the settings'}: expected an object")
    known = {f.name for f in fields(kind)}
    for key in data:
        if key not in known:
            name = f"{where}.{key}" if where else key
            raise SettingsError(f"{name}: not a setting here (expected {', '.join(sorted(known))})")
    return dict(data)


def _checked(check: Callable[[Any], Any], value: Any, where: str) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SettingsError(f"{where}: expected a list")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where}: expected a string")
    return value


_TRUE = ("1", "on", "t", "true", "y", "yes")
_FALSE = ("0", "off", "f", "false", "n", "no")


def _bool(value: Any, where: str) -> bool:
    # What the pydantic section takes too: 0 and 1, and the usual words for them.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingsError(f"{where}: expected true or false")


def _path(value: Any, where: str) -> Path | None:
    if value is None:
        return None
    return Path(_str(value, where))


def _number_or_text(value: Any, where: str) -> str:
    # As the pydantic section does: numbers go through the parser too, so -5, nan and inf
    # are refused alike; booleans and other types are not numbers.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingsError(f"{where}: expected a number or a string with a unit")
    return str(value)


def _size(value: Any, where: str) -> int:
    size: int = _checked(parse_size, _number_or_text(value, where), where)
    if size <= 0:
        raise SettingsError(f"{where}: expected a size greater than 0")
    return size


def _duration(value: Any, where: str) -> float:
    seconds: float = _checked(parse_duration, _number_or_text(value, where), where)
    return seconds


def _retries(value: Any, where: str) -> int:
    # Whole numbers written as the pydantic section takes them too: 4, 4.0, "4".
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int) or not 0 <= number <= 20:
        raise SettingsError(f"{where}: expected a whole number from 0 to 20")
    return int(number)
