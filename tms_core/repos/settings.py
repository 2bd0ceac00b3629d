"""The `repositories` settings: where models may come from, with what credentials, and the
limits on fetching them.

The daemon reads them (its presence check at acquire) and hands the sidecars the same
settings as JSON (`to_sidecar_json`), which they parse without pydantic (`plain`, whose
checks these share): credentials are never in that JSON, only the names of where they are
(a secrets file entry, environment variables), which each sidecar resolves itself from the
file or the Secret mounted into its pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tms_core.repos.plain import CREDENTIAL_FIELDS, check_credentials_env, check_prefix
from tms_core.settings_base import Section, duration, size

__all__ = ["CREDENTIAL_FIELDS", "Repository", "RepositorySettings"]


class Repository(Section):
    """One repository: every model URI starting with `prefix` uses these settings (the
    longest matching prefix wins)."""

    prefix: str
    """A URI prefix: `s3://bucket/models/`, `https://registry.example.com/`, `file:///srv/`."""

    endpoint_url: str = ""
    """S3: the endpoint of an S3-compatible store (MinIO, Ceph); "": AWS (or AWS_ENDPOINT_URL)."""

    region: str = ""
    """S3: the region; "": AWS_REGION or the profile's."""

    addressing_style: Literal["", "path", "virtual", "auto"] = ""
    """S3: `path` for most S3-compatible stores; "": boto3's default."""

    anonymous: bool = False
    """S3: unsigned requests (public buckets)."""

    profile: str = ""
    """S3: an AWS profile from the shared config files; "": AWS_PROFILE or the default chain."""

    ca_bundle: str = ""
    """HTTPS and S3: a PEM file of the certificate authorities to trust; "": the system's."""

    credentials: str = ""
    """The name of an entry in `repositories.secrets_file` holding this repository's
    credentials (`access_key_id`, `secret_access_key`, `session_token` for S3; `token`, or
    `username` and `password`, for HTTP)."""

    credentials_env: dict[str, str] = Field(default_factory=dict)
    """Credentials from environment variables: credential field -> variable name
    (`{token: REGISTRY_TOKEN}`); these win over the secrets file's."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("credentials_env")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        check_credentials_env(value)
        return value


class RepositorySettings(Section):
    repositories: list[Repository] = Field(default_factory=list)
    """Per-prefix settings and credentials of the stores models come from."""

    allowed_prefixes: list[str] = Field(default_factory=list)
    """URI prefixes models may come from (scheme, host and path: `s3://models/`,
    `https://registry.example.com/models/`, `file:///srv/models/`); empty: any."""

    allow_link_local: bool = False
    """Allow hosts that resolve to link-local or cloud metadata addresses (169.254.0.0/16,
    fe80::/10, fd00:ec2::254); refused by default."""

    secrets_file: Path | None = None
    """A YAML file of named credentials (`name: {access_key_id: …, secret_access_key: …}`),
    readable only by the daemon's user; on Kubernetes, a Secret mounted into the sidecars."""

    max_model_size: int = Field(default=64 * 1024**3, gt=0)
    """The most one model may take, downloaded and unpacked (`20GiB`)."""

    stall_timeout: float = Field(default=30.0, gt=0)
    """Seconds a transfer may go without receiving a byte before it counts as failed."""

    retries: int = Field(default=4, ge=0, le=20)
    """Retries of a transient failure (connection reset, 5xx, stall), with backoff."""

    cache_dir: Path | None = None
    """The machine's model cache, shared by its servers; defaults beside the state file
    (`model-cache/`). On Kubernetes: a hostPath on each node (`kubernetes.model_cache_path`)."""

    cache_size: int = Field(default=100 * 1024**3, gt=0)
    """The cache's size cap: least recently used models no server holds are evicted past it."""

    _parse_d = field_validator("stall_timeout", mode="before")(duration)
    _parse_s = field_validator("max_model_size", "cache_size", mode="before")(size)

    def to_sidecar_json(self, **changes: Any) -> str:
        """These settings as the sidecar reads them (`--repositories`), with `changes`
        (paths as the sidecar sees them). Holds no credential, only where they are."""
        return self.model_copy(update=changes).model_dump_json()
