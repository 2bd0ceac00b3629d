"""The repository settings as a sidecar parses them without pydantic (`tms_core.repos.plain`):
the same fields, defaults, values and refusals as the daemon's section, errors naming the
field and what was expected, and the fetching machinery working from them."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from sidecar.fetch import read_settings
from tests.conftest import EXAMPLES, ROOT
from tms_core.repos.fetcher import Fetcher
from tms_core.repos.plain import (
    PlainRepository,
    PlainSettings,
    SettingsError,
    parse_settings,
)
from tms_core.repos.policy import Policy, Refused
from tms_core.repos.settings import Repository, RepositorySettings

FULL = RepositorySettings(
    repositories=[
        Repository(
            prefix="s3://models/team/",
            endpoint_url="http://minio:9000",
            region="eu-west-1",
            addressing_style="path",
            anonymous=True,
            profile="ci",
            ca_bundle="/etc/ca.pem",
            credentials="minio",
            credentials_env={"access_key_id": "KEY_ID", "secret_access_key": "SECRET"},
        ),
        Repository(prefix="https://registry.example.com/"),
    ],
    allowed_prefixes=["s3://models/", "file:///srv/models/"],
    allow_link_local=True,
    secrets_file=Path("/etc/tms/secrets.yaml"),
    max_model_size="20GiB",
    stall_timeout="1m30s",
    retries=7,
    cache_dir=Path("/var/cache/tms"),
    cache_size="2TiB",
)


def values(settings: Any) -> dict[str, Any]:
    """Every field's value, lists as tuples and repositories as dicts, for comparing."""

    def plain(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(plain(v) for v in value)
        if isinstance(value, Repository | PlainRepository):
            return values(value)
        if isinstance(value, dict):
            return dict(value)
        return value

    names = [f.name for f in dataclasses.fields(PlainSettings)]
    if isinstance(settings, Repository | PlainRepository):
        names = [f.name for f in dataclasses.fields(PlainRepository)]
    return {name: plain(getattr(settings, name)) for name in names}


def test_the_same_fields_as_the_daemons_section() -> None:
    assert [f.name for f in dataclasses.fields(PlainSettings)] == list(
        RepositorySettings.model_fields
    )
    assert [f.name for f in dataclasses.fields(PlainRepository)] == list(Repository.model_fields)


def test_the_same_defaults() -> None:
    assert values(parse_settings("{}")) == values(RepositorySettings())
    assert values(PlainSettings()) == values(RepositorySettings())
    assert values(parse_settings('{"repositories": [{"prefix": "s3://m/"}]}').repositories[0]) == (
        values(Repository(prefix="s3://m/"))
    )


def test_what_the_daemon_hands_its_sidecars_reads_back_the_same() -> None:
    parsed = parse_settings(FULL.to_sidecar_json())
    assert values(parsed) == values(FULL)
    assert parsed.stall_timeout == 90.0
    assert parsed.max_model_size == 20 * 1024**3
    changed = parse_settings(FULL.to_sidecar_json(cache_dir=Path("/cache")))
    assert changed.cache_dir == Path("/cache")


def test_sizes_and_durations_as_people_write_them() -> None:
    parsed = parse_settings(
        json.dumps({"max_model_size": "512MiB", "cache_size": 4096, "stall_timeout": "500ms"})
    )
    assert (parsed.max_model_size, parsed.cache_size, parsed.stall_timeout) == (
        512 * 1024**2,
        4096,
        0.5,
    )


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"retries": 21}, "retries: expected a whole number from 0 to 20"),
        ({"retries": -1}, "retries: expected a whole number from 0 to 20"),
        ({"retries": "four"}, "retries: expected a whole number from 0 to 20"),
        ({"retries": 4.5}, "retries: expected a whole number from 0 to 20"),
        ({"stall_timeout": -5}, "stall_timeout: '-5' is not"),
        ({"stall_timeout": "soon"}, "stall_timeout: 'soon' is not a duration"),
        ({"stall_timeout": "nan"}, "stall_timeout: 'nan' is not a positive duration"),
        ({"max_model_size": 0}, "max_model_size: expected a size greater than 0"),
        ({"cache_size": "lots"}, "cache_size: 'lots' is not a size"),
        ({"cache_size": True}, "cache_size: expected a number or a string with a unit"),
        ({"allow_link_local": "sure"}, "allow_link_local: expected true or false"),
        ({"allow_link_local": 2}, "allow_link_local: expected true or false"),
        ({"allow_link_local": None}, "allow_link_local: expected true or false"),
        ({"allowed_prefixes": "s3://m/"}, "allowed_prefixes: expected a list"),
        ({"allowed_prefixes": [3]}, "allowed_prefixes.0: expected a string"),
        ({"secrets_file": 3}, "secrets_file: expected a string"),
        ({"secret_file": "/x"}, "secret_file: not a setting here (expected "),
        ({"repositories": {}}, "repositories: expected a list"),
        ({"repositories": ["s3://m/"]}, "repositories.0: expected an object"),
        ({"repositories": [{}]}, "repositories.0.prefix: a URI prefix is required"),
        (
            {"repositories": [{"prefix": "s3://m/"}, {"prefix": "models"}]},
            "repositories.1.prefix: 'models' is not a URI prefix (such as s3://bucket/models/)",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "region": 1}]},
            "repositories.0.region: expected a string",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "addressing_style": "host"}]},
            "repositories.0.addressing_style: expected one of '', 'path', 'virtual', 'auto'",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "anonymous": "2"}]},
            "repositories.0.anonymous: expected true or false",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "credentials_env": {"api_key": "K"}}]},
            "repositories.0.credentials_env: 'api_key' is not a credential field",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "credentials_env": ["token"]}]},
            "repositories.0.credentials_env: expected an object",
        ),
        (
            {"repositories": [{"prefix": "s3://m/", "endpoint": "http://x"}]},
            "repositories.0.endpoint: not a setting here",
        ),
        ([], "the settings: expected an object"),
    ],
)
def test_refused_as_the_daemon_refuses_them_naming_the_field(data: Any, said: str) -> None:
    text = json.dumps(data)
    with pytest.raises(SettingsError) as refused:
        parse_settings(text)
    assert said in str(refused.value)
    with pytest.raises(pydantic.ValidationError):
        RepositorySettings.model_validate_json(text)


@pytest.mark.parametrize(
    "data",
    [
        {"retries": "4"},
        {"retries": " 4 "},
        {"retries": "4.0"},
        {"retries": 4.0},
        {"allow_link_local": "yes"},
        {"allow_link_local": "FALSE"},
        {"allow_link_local": 1},
        {"allow_link_local": 0.0},
        {"repositories": [{"prefix": "s3://m/", "anonymous": "on"}]},
        {"secrets_file": None, "cache_dir": None},
    ],
)
def test_what_the_daemons_section_takes_besides_the_json_it_writes(data: Any) -> None:
    text = json.dumps(data)
    assert values(parse_settings(text)) == values(RepositorySettings.model_validate_json(text))


def test_not_json_at_all() -> None:
    with pytest.raises(SettingsError, match="not valid JSON"):
        parse_settings("{repositories: []")


def test_read_settings_names_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMS_REPOSITORIES", raising=False)
    assert read_settings(None) == PlainSettings()
    path = tmp_path / "repositories.json"
    path.write_text(FULL.to_sidecar_json())
    assert values(read_settings(path)) == values(FULL)
    path.write_text('{"retries": 99}')
    with pytest.raises(SettingsError, match=rf"^{path}: retries: expected a whole number"):
        read_settings(path)
    monkeypatch.setenv("TMS_REPOSITORIES", '{"allowed_prefixes": ["file:///srv/"]}')
    assert read_settings(None).allowed_prefixes == ("file:///srv/",)
    monkeypatch.setenv("TMS_REPOSITORIES", '{"retries": "x"}')
    with pytest.raises(SettingsError, match=r"^TMS_REPOSITORIES: retries: "):
        read_settings(None)


def test_the_policy_and_a_fetch_work_from_the_plain_settings(tmp_path: Path) -> None:
    allowed = f"{EXAMPLES.as_uri()}/"
    settings = parse_settings(
        json.dumps(
            {
                "allowed_prefixes": [allowed],
                "repositories": [{"prefix": allowed, "credentials_env": {"token": "NO_SUCH"}}],
            }
        )
    )
    policy = Policy(settings, env={})
    with pytest.raises(Refused):
        policy.check_allowed("file:///etc/passwd")
    resolved = policy.resolve((EXAMPLES / "add_sub").as_uri())
    assert resolved.repository.prefix == allowed
    assert resolved.credentials.empty
    assert policy.resolve("s3://elsewhere/m").repository.prefix == "s3://"
    models = tmp_path / "server" / "models"
    models.mkdir(parents=True)
    fetcher = Fetcher(settings, models, tmp_path / "cache")
    assert fetcher.fetch("add_sub", (EXAMPLES / "add_sub").as_uri())
    assert (models / "add_sub" / "config.pbtxt").is_file()


def test_a_file_fetch_loads_no_pydantic_yaml_nor_the_other_sources(tmp_path: Path) -> None:
    """What a sidecar's first file:// fetch waits for, checked in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sidecar.fetch import Fetcher, read_settings\n"
        f"settings = read_settings(Path({str(tmp_path / 'repositories.json')!r}))\n"
        f"models = Path({str(tmp_path / 'models')!r})\n"
        "models.mkdir()\n"
        f"Fetcher(settings, models, Path({str(tmp_path / 'cache')!r}))"
        f".fetch('add_sub', {(EXAMPLES / 'add_sub').as_uri()!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    (tmp_path / "repositories.json").write_text(
        FULL.to_sidecar_json(secrets_file=None, allowed_prefixes=[])
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = ("pydantic", "yaml", "boto3", "botocore", "tms_core.repos.sources.http")
    assert [m for m in loaded if m.split(".")[0] in heavy or m in heavy] == []
    assert (tmp_path / "models" / "add_sub" / "config.pbtxt").is_file()
