"""Lease spec files (`tms lease acquire -f lease.yaml`): the acquire flags, written down.

The keys mirror the flags (see docs/cli.md); a flag given on the command line wins over the
file, and relative paths in the file are relative to the file, not to where `tms` runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlparse

from tms_core.cli.yamlfile import load_yaml
from tms_core.lease_request import LeaseOptions, ModelRequest, autoscale_request
from tms_core.units import parse_duration, parse_size

SPEC_KEYS = (
    "models",
    "name",
    "duration",
    "activity_window",
    "pool",
    "quota",
    "tritonserver",
    "gpus",
    "gpu_product",
    "node_selector",
    "exclusive",
    "colocate_with",
    "avoid",
    "labels",
    "priority",
    "autoscale",
)
AUTOSCALE_KEYS = ("min_replicas", "max_replicas", "metric", "target", "park_after")
MODEL_KEYS = ("name", "uri", "memory", "sha256")


class AutoscaleFields(TypedDict, total=False):
    """The `autoscale` keys given (a flag may give one and the file the others); those left
    out take `autoscale_request`'s defaults."""

    min_replicas: int
    max_replicas: int
    metric: str
    target: float
    park_after_s: float


@dataclass(frozen=True)
class LeaseSpec:
    """What to acquire; `None` means not given (the daemon's default, or the file's)."""

    models: tuple[ModelRequest, ...] | None = None
    name: str | None = None
    duration_s: float | None = None
    activity_window_s: float | None = None
    pool: str | None = None
    quota: int | None = None
    tritonserver: str | None = None
    gpus: int | None = None
    gpu_product: str | None = None
    node_selector: dict[str, str] | None = None
    exclusive: bool | None = None
    colocate_with: tuple[str, ...] | None = None
    avoid: tuple[str, ...] | None = None
    labels: dict[str, str] | None = None
    priority: int | None = None
    autoscale: AutoscaleFields | None = None

    def options(self) -> LeaseOptions:
        """The lease options this spec asks for; what it leaves out is the daemon's default."""
        return LeaseOptions(
            name=self.name or "",
            duration_s=self.duration_s or 0.0,
            activity_window_s=self.activity_window_s or 0.0,
            pool=self.pool or "",
            quota=self.quota or 0,
            tritonserver=self.tritonserver or "",
            gpus=self.gpus,
            gpu_product=self.gpu_product or "",
            node_selector=dict(self.node_selector or {}),
            exclusive=bool(self.exclusive),
            colocate_with=tuple(self.colocate_with or ()),
            avoid=tuple(self.avoid or ()),
            labels=dict(self.labels or {}),
            priority=self.priority or 0,
            autoscale=autoscale_request(**self.autoscale) if self.autoscale else None,
        )

    def overridden_by(self, other: LeaseSpec) -> LeaseSpec:
        """This spec with every field that `other` gives replaced (`-m` replaces all models)."""
        given = {f.name: getattr(other, f.name) for f in fields(other)}
        if self.autoscale and other.autoscale:
            # `--autoscale-target` on the command line keeps the file's replicas.
            given["autoscale"] = {**self.autoscale, **other.autoscale}
        return replace(self, **{k: v for k, v in given.items() if v is not None})


def unknown_key(where: str, key: object, known: tuple[str, ...]) -> ValueError:
    text = str(key)
    import difflib  # only on a misspelt field: the CLI's short commands do without it

    close = difflib.get_close_matches(text, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
    return ValueError(f"{where}unknown key {text!r}; {hint}")


def parse_duration_field(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{field}: expected a duration such as 90s, 10m or 1h30m")
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def local_path(path: str, base: Path) -> str:
    """`path` made absolute against `base`, without resolving symlinks (allowlists match text)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def load_spec(path: Path) -> LeaseSpec:
    """The spec in `path`; every mistake is one `ValueError` naming the file and the key."""
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    return spec_from_data(data, base=path.resolve().parent, where=f"{path}: ")


def spec_from_data(data: Any, *, base: Path, where: str = "") -> LeaseSpec:
    """The spec in parsed YAML (a notebook cell's, say); relative paths are under `base`."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}expected a mapping of {', '.join(SPEC_KEYS)}")
    for key in data:
        if key not in SPEC_KEYS:
            raise unknown_key(where, key, SPEC_KEYS)

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{where}{key}: expected a string, got {value!r}")
        return value

    models = None
    if "models" in data:
        models = _models(data["models"], base, where)

    def whole(key: str) -> int | None:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}{key}: expected a whole number, got {value!r}")
        return value

    def mapping(key: str) -> dict[str, str] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{where}{key}: expected a mapping of key: value")
        return {str(k): str(v) for k, v in value.items()}

    def strings(key: str) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}{key}: expected a list of lease names or key=value labels")
        return tuple(value)

    exclusive = data.get("exclusive")
    if exclusive is not None and not isinstance(exclusive, bool):
        raise ValueError(f"{where}exclusive: expected true or false, got {exclusive!r}")
    quota = whole("quota")
    tritonserver = text("tritonserver")
    return LeaseSpec(
        models=models,
        name=text("name"),
        duration_s=(
            parse_duration_field(data["duration"], f"{where}duration")
            if data.get("duration") is not None
            else None
        ),
        activity_window_s=(
            parse_duration_field(data["activity_window"], f"{where}activity_window")
            if data.get("activity_window") is not None
            else None
        ),
        pool=text("pool"),
        quota=quota,
        tritonserver=local_path(tritonserver, base) if tritonserver else tritonserver,
        gpus=whole("gpus"),
        gpu_product=text("gpu_product"),
        node_selector=mapping("node_selector"),
        exclusive=exclusive,
        colocate_with=strings("colocate_with"),
        avoid=strings("avoid"),
        labels=mapping("labels"),
        priority=whole("priority"),
        autoscale=_autoscale(data.get("autoscale"), f"{where}autoscale"),
    )


def _autoscale(value: Any, where: str) -> AutoscaleFields | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(AUTOSCALE_KEYS)}")
    result: AutoscaleFields = {}
    for key, item in value.items():
        if key not in AUTOSCALE_KEYS:
            raise unknown_key(f"{where}: ", key, AUTOSCALE_KEYS)
        if key in ("min_replicas", "max_replicas"):
            least = 0 if key == "min_replicas" else 1
            if isinstance(item, bool) or not isinstance(item, int) or item < least:
                raise ValueError(f"{where}.{key}: expected a whole number of at least {least}")
            if key == "min_replicas":
                result["min_replicas"] = item
            else:
                result["max_replicas"] = item
        elif key == "metric":
            if not isinstance(item, str):
                raise ValueError(f"{where}.metric: expected a metric name")
            result["metric"] = item
        elif key == "park_after":
            result["park_after_s"] = parse_duration_field(item, f"{where}.park_after")
        else:
            if isinstance(item, bool) or not isinstance(item, int | float) or item <= 0:
                raise ValueError(f"{where}.target: expected a number above 0")
            result["target"] = item
    return result


def parse_replicas(text: str, flag: str = "--autoscale") -> AutoscaleFields:
    """`2:8` (or `8`, meaning 1 to 8) as min and max replicas; MIN 0 parks when idle."""
    low, sep, high = text.partition(":")
    try:
        minimum, maximum = (int(low), int(high)) if sep else (1, int(low))
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not MIN:MAX replicas (such as 1:4)") from None
    if minimum < 0 or maximum < max(minimum, 1):
        raise ValueError(f"{flag}: {text!r} needs 0 <= MIN <= MAX and MAX >= 1")
    return {"min_replicas": minimum, "max_replicas": maximum}


def _models(value: Any, base: Path, where: str) -> tuple[ModelRequest, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}models: expected a list of {{name, uri, memory}}")
    models = []
    for i, entry in enumerate(value):
        at = f"{where}models[{i}]: "
        if not isinstance(entry, dict):
            raise ValueError(f"{at}expected a mapping with name, uri and memory")
        for key in entry:
            if key not in MODEL_KEYS:
                raise unknown_key(at, key, MODEL_KEYS)
        for key in ("name", "uri"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f"{at}{key} is missing")
        uri = entry["uri"]
        if not urlparse(uri).scheme:
            uri = Path(local_path(uri, base)).resolve().as_uri()
        memory = 0
        if entry.get("memory") is not None:
            raw = entry["memory"]
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise ValueError(f"{at}memory: expected a size such as 512MiB, got {raw!r}")
            try:
                memory = parse_size(str(raw))
            except ValueError as exc:
                raise ValueError(f"{at}memory: {exc}") from None
        sha256 = entry.get("sha256") or ""
        if not isinstance(sha256, str):
            raise ValueError(f"{at}sha256: expected 64 hex digits, got {sha256!r}")
        models.append(ModelRequest(entry["name"], uri, memory, sha256))
    return tuple(models)
