"""The daemon's settings: one typed root of small sections.

Who reads what: `tms daemon` builds `Settings` from (highest first) its command-line flags,
`TMS_*` environment variables (`TMS_SERVERS__IDLE_GRACE=30s`), the YAML file named by
`--config` or `TMS_CONFIG_FILE`, then the defaults below. Unknown keys in the file are
rejected with the closest valid key suggested.

The settings of servers under every backend were once `local.*` keys; those keys
(`DEPRECATED_KEYS`) still work, moved onto their `servers.*` keys with a warning.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tms_core.defaults import DEFAULT_LISTEN, default_state_dir
from tms_core.errors import ConfigError
from tms_core.inventory import parse_gpus
from tms_core.repos.settings import RepositorySettings
from tms_core.router.cpu import parse as parse_cpu
from tms_core.settings_base import Section, duration, size
from tms_core.triton.args import check_triton_args
from tms_core.units import parse_size

log = logging.getLogger(__name__)


class DaemonSettings(Section):
    listen: str = DEFAULT_LISTEN
    """host:port of the gRPC API. Keep it on 127.0.0.1 unless the network is trusted."""

    sidecar_listen: str = "127.0.0.1:0"
    """host:port of the sidecars' own listener (`SidecarService`), apart from the API so that
    the API's port does not offer it; port 0: any free port. Local sidecars are told where it
    is; on Kubernetes it must be beyond loopback (`0.0.0.0:30347`, `kubernetes.daemon_address`
    names its Service)."""

    tls_listen: str = ""
    """host:port of a second, TLS-only listener for the API ("": none); needs `tls_cert` and
    `tls_key`. Clients reach it as `https://host:port`."""

    tls_cert: Path | None = None
    """PEM certificate (chain) of the TLS listener."""

    tls_key: Path | None = None
    """PEM private key of the TLS listener."""

    tls_client_ca: Path | None = None
    """PEM authorities of client certificates: when set, the TLS listener admits only clients
    presenting a certificate signed by one of them (mutual TLS), on top of their API tokens."""

    state: Path | None = None
    """SQLite state file; defaults to `$XDG_STATE_HOME/tms/state.db`."""

    backend: Literal["local", "kubernetes"] = "local"
    """Where servers run: `local` starts tritonserver processes on this machine; `kubernetes`
    makes each server a Deployment in the cluster (see the `kubernetes` section)."""

    leave_serving: bool = False
    """On shutdown, leave servers running so a restarted daemon adopts them."""

    allow_insecure_listen: bool = False
    """Let `listen` (plain text, no TLS) be an address beyond loopback, or let any listener
    run with `identity.tokens` off beyond loopback. Logged as a warning at every start: only
    for a network nobody else can reach (a pod's own network, a lab)."""

    metrics_listen: str = ""
    """host:port of the daemon's Prometheus metrics over HTTP ("": none)."""

    max_message_bytes: int = Field(default=4 * 1024**2, ge=64 * 1024)
    """The largest gRPC message the API accepts or sends (`4MiB`)."""

    _parse_m = field_validator("max_message_bytes", mode="before")(size)

    def state_path(self) -> Path:
        return self.state or default_state_dir() / "state.db"


class IdentitySettings(Section):
    """Who may call the API (docs/security.md)."""

    tokens: bool = True
    """Check an API token on every call. Off: every caller is an admin (sidecars still need
    their credentials); beyond loopback that needs `daemon.allow_insecure_listen`."""

    local_admin_token: bool = True
    """Keep a working admin token in `<state dir>/admin.token` (mode 0600), which clients of
    the same user on this machine find by themselves."""

    audit_keep: int = Field(default=100_000, ge=1)
    """How many audit records the state keeps (the oldest go first)."""


class LeaseSettings(Section):
    default_duration: float = 3600.0
    """Seconds a lease lives when the request names no duration (`1h`, `30m`)."""

    max_duration: float = 7 * 86400.0
    """The longest duration a lease may ask for or be renewed by."""

    _parse = field_validator("default_duration", "max_duration", mode="before")(duration)


class ServerSettings(Section):
    """Servers under every backend (local processes, Kubernetes pods, the simulator's)."""

    idle_grace: float = 60.0
    """Seconds a server with no lease keeps running before it is stopped."""

    start_timeout: float = 60.0
    """Seconds a new server has to become ready before its leases fail."""

    memory: int = Field(default_factory=lambda: _host_memory(), gt=0)
    """Memory one server offers to the models placed on it (declared sizes are counted)."""

    max_servers: int = Field(default=8, ge=1)
    """Servers this daemon may run at once; further leases wait PENDING."""

    standby: int = Field(default=0, ge=0)
    """Started, empty servers of the default Triton kept ready, so that a cold lease waits
    only for its models to load (docs/leases.md, Standby servers). They count against
    `max_servers`; one that a lease takes is replaced, and the idle stop leaves them."""

    standby_tritons: dict[str, int] = Field(default_factory=dict)
    """More standby servers, per Triton other than the default: a `tritonserver` path
    locally, an image on Kubernetes, each on the allowlist when leases are to take them
    (`{"/opt/tritonserver-24.08/bin/tritonserver": 1}`). A pool keeps its own servers up
    with its `min_servers`."""

    @field_validator("standby_tritons")
    @classmethod
    def _standby_counts(cls, value: dict[str, int]) -> dict[str, int]:
        for triton, count in value.items():
            if not triton:
                raise ValueError("a Triton (path or image) is needed for each count")
            if count < 0:
                raise ValueError(f"{triton}: expected a count of 0 or more, got {count}")
        return value

    triton_args: list[str] = Field(default_factory=list)
    """More `tritonserver` arguments for every server, local or on Kubernetes, each
    `--name` or `--name=value` (e.g. `--disable-auto-complete-config`, which saves each
    Python-backend load ~1.2 s where every model's `config.pbtxt` is complete). The
    arguments TMS sets itself (repository, control mode, addresses, ports, backends) are
    refused."""

    @field_validator("triton_args")
    @classmethod
    def _check_triton_args(cls, value: list[str]) -> list[str]:
        return check_triton_args(value)

    max_restarts: int = Field(default=3, ge=0)
    """Times a server whose tritonserver or sidecar died is restarted (its leases' models
    loaded again) within `restart_window`; at the next crash its leases are placed elsewhere
    once, and failed with the crash history when they crash there too (docs/reliability.md)."""

    restart_backoff: float = 1.0
    """Wait before a server's second restart, doubled before each further one (the first
    restart is at once)."""

    restart_window: float = 600.0
    """Crashes older than this are forgotten: a server that ran this long is healthy again."""

    _parse_d = field_validator(
        "idle_grace", "start_timeout", "restart_backoff", "restart_window", mode="before"
    )(duration)
    _parse_s = field_validator("memory", mode="before")(size)


class LocalSettings(Section):
    tritonserver: Path | None = None
    """The tritonserver binary; defaults to the one in the nvidia-pytriton wheel.

    Also set by `--tritonserver` and `TMS_TRITONSERVER`."""

    backend_directory: Path | None = None
    """Triton's backend directory; defaults to the wheel's, or `<binary>/../../backends`."""

    work_dir: Path | None = None
    """Where each server gets its private model directory and logs; defaults beside the state."""

    gpus: list[str] = Field(default_factory=list)
    """GPUs to place on when NVML finds none, as sizes (`["80GiB", "80GiB"]`; `--gpus 2x80GiB`)."""

    gpu_product: str = "declared GPU"
    """The product name given to declared GPUs (matched by a lease's `gpu_product`)."""

    node_name: str = ""
    """This machine's name in `tms cluster`; defaults to the host name."""

    node_labels: dict[str, str] = Field(default_factory=dict)
    """Labels a lease's node selector matches (`zone: lab`)."""

    sidecar_metrics: bool = False
    """Have each sidecar serve its Prometheus metrics on a loopback port of its own, named in
    `sidecar-metrics.url` in its server's work directory."""

    router_hold: float = 15.0
    """How long the router holds a new connection to a lease (or name) address whose lease
    is loading, as while its crashed server restarts, before closing it; 0: never hold."""

    router_hold_connections: int = Field(default=64, ge=0)
    """Connections the router holds at once per address; more are closed at once."""

    spare_sidecar: bool = True
    """Keep one sidecar started ahead, imports done, and hand it to the next server that
    starts: a cold server's first load does not wait for its sidecar to start."""

    router_cpu: str | int = "auto"
    """The CPU the router runs on: `auto` (one of its own, the highest-numbered, where there
    are two or more), `none` (wherever the scheduler puts it) or a CPU number."""

    _parse_hold = field_validator("router_hold", mode="before")(duration)

    @field_validator("router_cpu", mode="before")
    @classmethod
    def _parse_router_cpu(cls, value: Any) -> Any:
        return parse_cpu(str(value))

    @field_validator("gpus", mode="before")
    @classmethod
    def _parse_gpus(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_gpus(value)
        if isinstance(value, list):
            for size in value:
                parse_size(str(size))
            return [str(size) for size in value]
        return value


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * 1024**3


class PlacementSettings(Section):
    isolated_frameworks: list[str] = Field(default_factory=lambda: ["pytorch", "tensorflow"])
    """Frameworks (backend or platform in config.pbtxt) that keep memory after an unload and
    so get servers of their own, one framework per server."""

    preemption: bool = False
    """Let a lease that would wait evict leases of lower priority (they wait in its place)."""

    consolidate: bool = False
    """Move idle leases off lightly used servers onto other running ones, when that empties
    a server (load on the new server first, switch, then unload)."""

    consolidate_idle_s: float = Field(default=600.0, gt=0)
    """How long a lease must have served no inference (and been READY) to be moved."""

    consolidate_interval_s: float = Field(default=300.0, gt=0)
    """How often the consolidation pass runs."""

    consolidate_max_used: float = Field(default=0.5, gt=0, le=1)
    """Only servers using at most this fraction of their memory are emptied."""

    _parse_c = field_validator("consolidate_idle_s", "consolidate_interval_s", mode="before")(
        duration
    )


class AutoscaleSettings(Section):
    """Replicas and autoscaling (docs/leases.md, Autoscaling). Each timing is the default
    for leases that do not set their own in their `autoscale` request."""

    up_window: float = 15.0
    """How long the metric must ask for more replicas before one is added (stabilisation)."""

    down_window: float = 120.0
    """How long the metric must ask for fewer replicas before one is removed."""

    up_cooldown: float = 30.0
    """No replica is added for this long after the lease's last scaling decision."""

    down_cooldown: float = 120.0
    """No replica is removed for this long after the lease's last scaling decision."""

    drain: float = 10.0
    """A replica being removed leaves the lease's address this long before its models are
    unloaded, so that requests already sent to it finish."""

    park_after: float = Field(default=300.0, gt=0)
    """A lease that may park (autoscale MIN 0) parks after this long without an inference:
    its models are unloaded and its servers may stop; its addresses stay."""

    wake_timeout: float = Field(default=120.0, gt=0)
    """How long a parked lease's wake may take (placement, a server's start, the loads):
    connections held for it past this are answered with an error, and the lease parks
    again. Also how long the router holds each connection that waits for a wake."""

    _parse = field_validator(
        "up_window",
        "down_window",
        "up_cooldown",
        "down_cooldown",
        "drain",
        "park_after",
        "wake_timeout",
        mode="before",
    )(duration)


class KubernetesSettings(Section):
    namespace: str = ""
    """Namespace of the servers' objects; defaults to the daemon's own (in a pod) or `tms`."""

    kubeconfig: Path | None = None
    """Kubeconfig to use outside a cluster; in a pod the service account is used first."""

    context: str = ""
    """Kubeconfig context (outside a cluster); defaults to the current one."""

    triton_image: str = "nvcr.io/nvidia/tritonserver:24.10-py3"
    """Image of the `tritonserver` container when a lease names none; the allowlist holds
    images (not paths) with this backend."""

    sidecar_image: str = "ghcr.io/tms-project/tms:latest"
    """Image of the sidecar container (the repository's Dockerfile builds it)."""

    sidecar_metrics_port: int = Field(default=9465, ge=0, le=65535)
    """Port of each sidecar's Prometheus metrics in its pod (container port `sidecar-metrics`,
    for the PodMonitor in manifests/monitoring); 0: none."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Pull policy of both containers."""

    daemon_address: str = "tms-api:30347"
    """host:port at which sidecars in pods reach the daemon's sidecar listener
    (`daemon.sidecar_listen`, through its Service)."""

    cpu: str = "2"
    """CPU request and limit of the `tritonserver` container."""

    autoscale_mode: Literal["replicas", "hpa"] = "replicas"
    """How autoscaling leases scale: `replicas` (the daemon adds and removes replicas, each
    a server Deployment chosen by placement) or `hpa` (one exclusive server Deployment whose
    pods a HorizontalPodAutoscaler multiplies; placement counts it as one server)."""

    gpu_server_memory: int = Field(default=16 * 1024**3, gt=0)
    """Host memory request and limit of a GPU server's `tritonserver` (a CPU server's is its
    capacity, which placement counts models against)."""

    model_volume: dict[str, Any] = Field(default_factory=dict)
    """The volume holding the models, as a pod volume source (`{persistentVolumeClaim:
    {claimName: models}}`); lease URIs are `file://<model_volume_path>/<model>`."""

    model_volume_path: str = "/model-store"
    """Where the model volume is mounted (read-only) in the sidecar."""

    repository_secret: str = ""
    """A Secret with the model repositories' credentials, given to every sidecar: its keys
    as environment variables (`AWS_ACCESS_KEY_ID`, … and the variables `credentials_env`
    names) and as files under /etc/tms/repositories (`secrets.yaml`, which becomes
    `repositories.secrets_file`). "": none (web identity or public stores)."""

    model_cache_path: str = ""
    """A directory on each node (hostPath) holding the node's model cache, shared by its
    server pods; "": each pod downloads into its own scratch volume."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every object the daemon creates (and its pods)."""

    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to every object the daemon creates (and its pods)."""

    part_of: str = "tms"
    """The value of `app.kubernetes.io/part-of` on every object."""

    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of every server pod (GPU servers also tolerate `nvidia.com/gpu`)."""

    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the Services of leases and names."""

    service_domain: str = "svc.cluster.local"
    """DNS suffix of lease endpoints: `<lease or name>.<namespace>.<service_domain>`."""

    activator_selector: str = "app.kubernetes.io/component=activator"
    """Label selector of the activator's pods (manifests/base/activator.yaml): the router
    that holds connections to parked leases and wakes them. While a lease is parked, or
    waking and not READY yet, its Services' EndpointSlices list these pods. "": no activator
    (a parked lease's Services list no pods)."""

    activator_routes: str = "tms-activator-routes"
    """The ConfigMap the daemon writes the activator's routes into (key `routes.json`)."""

    activator_token_secret: str = "tms-activator-token"
    """The Secret the activator reads its API token from (key `token`). At start the daemon
    makes an `activator` token (it may only wake leases) and writes it there, unless the Secret
    already holds one that works. "" (or no `activator_selector`): the daemon leaves it alone."""

    activator_first_port: int = Field(default=20000, ge=1024, le=65000)
    """The activator's ports for parkable leases start here: two (HTTP, gRPC) per lease,
    kept for the lease's life."""

    request_timeout: float = 10.0
    """Seconds one Kubernetes API call may take before it counts as failed."""

    poll_interval: float = 2.0
    """Seconds between reads of pods and nodes (server health and the GPU inventory)."""

    _parse_d = field_validator("request_timeout", "poll_interval", mode="before")(duration)
    _parse_s = field_validator("gpu_server_memory", mode="before")(size)


# Keys that moved, old (section, key) -> new (section, key). The old ones still work: a file,
# a TMS_* variable or an explicit value under the old key sets the new one, with a warning.
DEPRECATED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("local", "idle_grace"): ("servers", "idle_grace"),
    ("local", "start_timeout"): ("servers", "start_timeout"),
    ("local", "server_memory"): ("servers", "memory"),
    ("local", "max_servers"): ("servers", "max_servers"),
}


def _env_name(section: str, key: str) -> str:
    return f"TMS_{section}__{key}".upper()


def _move_deprecated(data: Any, where: str = "") -> Any:
    """`data` (sections -> values) with each deprecated key moved onto its new key, warning
    (a log line and a DeprecationWarning) for each; where both are given, the new key wins.
    `where` prefixes the warnings (`config file x.yaml: `). `data` itself is not changed."""
    if not isinstance(data, dict):
        return data
    moved = dict(data)
    for (old_section, old_key), (new_section, new_key) in DEPRECATED_KEYS.items():
        old_values = moved.get(old_section)
        new_values = moved.get(new_section, {})
        if not isinstance(old_values, dict) or old_key not in old_values:
            continue
        if not isinstance(new_values, dict):
            continue  # validation says what is wrong with the new section
        old_values, new_values = dict(old_values), dict(new_values)
        value = old_values.pop(old_key)
        old, new = f"{old_section}.{old_key}", f"{new_section}.{new_key}"
        message = (
            f"{where}{old} is deprecated; use {new} (in the environment:"
            f" {_env_name(new_section, new_key)}, not {_env_name(old_section, old_key)})"
        )
        if new_key in new_values:
            message += f"; both are given, so {new} is used and {old} ignored"
        else:
            new_values[new_key] = value
        moved[old_section], moved[new_section] = old_values, new_values
        log.warning("%s", message)
        warnings.warn(message, DeprecationWarning, stacklevel=2)
    return moved


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMS_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    servers: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    autoscale: AutoscaleSettings = Field(default_factory=AutoscaleSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    repositories: RepositorySettings = Field(default_factory=RepositorySettings)

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        # Explicit values and TMS_* variables arrive here merged; load_settings moves each of
        # its layers first, so that a layer's old key still beats a lower layer's new one.
        return _move_deprecated(data)


class _Merged(Settings):
    """load_settings' last step: its merged layers alone. The environment is one of them
    already; read again, its deprecated keys would meet their new ones a second time."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the file (if any), the environment, then `overrides` (section -> values)."""
    path = config_file or (Path(p) if (p := os.environ.get("TMS_CONFIG_FILE")) else None)
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"config file {path}: not valid YAML ({problem})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections")
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a mapping of settings, got {values!r}")
        data = _move_deprecated(loaded, where=f"config file {path}: ")
    try:
        # Lowest first: the file, then TMS_* variables, then the caller's explicit values,
        # each with its deprecated keys already moved (Settings() moves the variables').
        layers = [data, Settings().model_dump(exclude_unset=True)]
        if binary := os.environ.get("TMS_TRITONSERVER"):
            layers.append({"local": {"tritonserver": binary}})
        explicit = {
            s: {k: v for k, v in vals.items() if v is not None} for s, vals in overrides.items()
        }
        layers.append(_move_deprecated(explicit))
        merged: dict[str, Any] = {}
        for layer in layers:
            for section, values in layer.items():
                merged.setdefault(section, {}).update(values)
        resolved = _Merged(**merged)
        return Settings.model_construct(resolved.model_fields_set, **dict(resolved))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        section_fields = _known_keys(first["loc"][:-1])
        # A key that moved is suggested under its new name (`servers.idle_grace`).
        moved = {
            old_key: f"{new_section}.{new_key}"
            for (old_section, old_key), (new_section, new_key) in DEPRECATED_KEYS.items()
            if first["loc"][:-1] == (old_section,)
        }
        hint = difflib.get_close_matches(str(first["loc"][-1]), [*section_fields, *moved], n=1)
        suggestion = f"; did you mean {moved.get(hint[0], hint[0])!r}?" if hint else ""
        return f"{where}: unknown setting{suggestion}"
    # pydantic prefixes what a validator raised with "Value error, ": the field says enough.
    return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return list(model.model_fields)
