"""Fetching models from real servers on 127.0.0.1 (an HTTP server and moto's S3 API) into a
model directory through the node cache: what arrives, what is refused, what is left behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.repos.servers import HttpRepo, MotoS3, Served, tar_of_dir, zip_of_dir
from tms_core.repos.cache import ModelCache
from tms_core.repos.fetcher import Fetcher, Repositories
from tms_core.repos.policy import RepositoryError
from tms_core.repos.settings import Repository, RepositorySettings

ADD_SUB = tar_of_dir(EXAMPLES / "add_sub")


def settings(**changes: object) -> RepositorySettings:
    base = RepositorySettings(stall_timeout=1.0, retries=1)
    return base.model_copy(update=changes)


def fetcher(tmp_path: Path, s: RepositorySettings, *, cache: bool = True) -> Fetcher:
    (tmp_path / "server" / "models").mkdir(parents=True, exist_ok=True)
    return Fetcher(s, tmp_path / "server" / "models", tmp_path / "cache" if cache else None)


def nothing_left(tmp_path: Path) -> None:
    """No model, no staging and no cache entry: a failure left nothing behind."""
    models = tmp_path / "server" / "models"
    assert not any(models.iterdir()), list(models.iterdir())
    for scratch in ("incoming", "trash"):
        where = tmp_path / "server" / scratch
        assert not where.exists() or not any(where.iterdir()), list(where.iterdir())
        where = tmp_path / "cache" / scratch
        assert not where.exists() or not any(where.iterdir()), list(where.iterdir())
    entries = tmp_path / "cache" / "entries"
    assert not entries.exists() or not any(entries.iterdir())


def is_add_sub(path: Path) -> bool:
    return (path / "config.pbtxt").is_file() and (path / "1" / "model.py").is_file()


# ---------------------------------------------------------------- HTTP


@pytest.mark.parametrize("packing", ["tar.gz", "zip"])
def test_an_archive_over_http_arrives_once_then_comes_from_the_cache(
    tmp_path: Path, http_repo: HttpRepo, packing: str
) -> None:
    body = ADD_SUB if packing == "tar.gz" else zip_of_dir(EXAMPLES / "add_sub")
    http_repo.files[f"/m/add_sub.{packing}"] = Served(body, etag='"v1"')
    uri = http_repo.url(f"/m/add_sub.{packing}")
    seen: list[tuple[int, int]] = []
    f = fetcher(tmp_path, settings())
    assert f.fetch("add_sub", uri, lambda done, total: seen.append((done, total)))
    assert is_add_sub(tmp_path / "server" / "models" / "add_sub")
    assert seen[-1] == (len(body), len(body))
    # A second server on the machine: no download, only the HEAD that revalidates.
    other = Fetcher(settings(), tmp_path / "server" / "models2", tmp_path / "cache")
    (tmp_path / "server" / "models2").mkdir()
    assert not other.fetch("add_sub", uri)
    assert is_add_sub(tmp_path / "server" / "models2" / "add_sub")
    assert http_repo.gets(f"/m/add_sub.{packing}") == 1
    # The object changes (a new ETag): fetched again.
    http_repo.files[f"/m/add_sub.{packing}"] = Served(body, etag='"v2"')
    assert other.fetch("add_sub", uri)
    assert http_repo.gets(f"/m/add_sub.{packing}") == 2


def test_a_single_file_becomes_version_1(tmp_path: Path, http_repo: HttpRepo) -> None:
    http_repo.files["/model.onnx"] = Served(b"onnx bytes")
    fetcher(tmp_path, settings(), cache=False).fetch("m", http_repo.url("/model.onnx"))
    assert (tmp_path / "server" / "models" / "m" / "1" / "model.onnx").read_bytes() == b"onnx bytes"


@pytest.mark.parametrize("auth", ["token", "basic"])
def test_credentials_come_from_the_secrets_file_or_the_environment(
    tmp_path: Path, http_repo: HttpRepo, auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_repo.files["/private/add_sub.tgz"] = Served(ADD_SUB)
    uri = http_repo.url("/private/add_sub.tgz")
    secrets = tmp_path / "secrets.yaml"
    if auth == "token":
        http_repo.token = "s3cr3t-token"
        secrets.write_text("registry: {token: s3cr3t-token}\n")
        repo = Repository(prefix=http_repo.url("/private/"), credentials="registry")
    else:
        http_repo.basic = ("alice", "pa55word")
        monkeypatch.setenv("REG_USER", "alice")
        monkeypatch.setenv("REG_PASS", "pa55word")
        repo = Repository(
            prefix=http_repo.url("/"),
            credentials_env={"username": "REG_USER", "password": "REG_PASS"},
        )
    good = settings(repositories=[repo], secrets_file=secrets)
    assert fetcher(tmp_path, good).fetch("add_sub", uri)
    # No credentials: refused, naming the repository, and nothing is left.
    with pytest.raises(RepositoryError, match=r"access denied.*none are configured") as refused:
        fetcher(tmp_path / "none", settings()).fetch("add_sub", uri)
    nothing_left(tmp_path / "none")
    # Wrong ones: refused, and the secret is in no message.
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("registry: {token: not-it}\n")
    bad_repo = Repository(prefix=http_repo.url("/"), credentials="registry")
    bad = settings(repositories=[bad_repo], secrets_file=wrong)
    with pytest.raises(RepositoryError, match=r"access denied.*were refused") as denied:
        fetcher(tmp_path / "bad", bad).fetch("add_sub", uri)
    for message in (str(refused.value), str(denied.value)):
        assert "s3cr3t" not in message and "not-it" not in message and "pa55" not in message
    nothing_left(tmp_path / "bad")


def test_the_most_specific_prefix_wins(tmp_path: Path, http_repo: HttpRepo) -> None:
    http_repo.token = "deep"
    http_repo.files["/a/b/add_sub.tgz"] = Served(ADD_SUB)
    secrets = tmp_path / "s.yaml"
    secrets.write_text("shallow: {token: shallow}\ndeep: {token: deep}\n")
    s = settings(
        secrets_file=secrets,
        repositories=[
            Repository(prefix=http_repo.url("/"), credentials="shallow"),
            Repository(prefix=http_repo.url("/a/b/"), credentials="deep"),
            Repository(prefix=http_repo.url("/a/"), credentials="shallow"),
        ],
    )
    assert fetcher(tmp_path, s).fetch("add_sub", http_repo.url("/a/b/add_sub.tgz"))


def test_sha256_on_the_spec_is_checked(tmp_path: Path, http_repo: HttpRepo) -> None:
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB)
    right = hashlib.sha256(ADD_SUB).hexdigest()
    uri = http_repo.url("/add_sub.tgz")
    with pytest.raises(RepositoryError, match="checksum mismatch"):
        fetcher(tmp_path, settings()).fetch("add_sub", f"{uri}#sha256={'0' * 64}")
    nothing_left(tmp_path)
    assert fetcher(tmp_path, settings()).fetch("add_sub", f"{uri}#sha256={right}")


def test_hostile_downloads_fail_cleanly(tmp_path: Path, http_repo: HttpRepo) -> None:
    http_repo.files["/truncated.tgz"] = Served(ADD_SUB, truncate_to=len(ADD_SUB) // 2)
    http_repo.files["/stalled.tgz"] = Served(ADD_SUB, stall_after=100)
    http_repo.files["/big.tgz"] = Served(ADD_SUB)
    http_repo.files["/to-metadata.tgz"] = Served(b"", redirect="http://169.254.169.254/latest")
    cases = [
        ("/truncated.tgz", settings(), "truncated|broke off"),
        ("/stalled.tgz", settings(), "stalled"),
        ("/big.tgz", settings(max_model_size=1000), "size limit"),
        ("/missing.tgz", settings(), "does not exist"),
        ("/to-metadata.tgz", settings(), "link-local or cloud metadata"),
        (
            "/big.tgz",
            settings(allowed_prefixes=["https://registry.example.com/"]),
            "not under an allowed",
        ),
    ]
    for i, (path, s, problem) in enumerate(cases):
        where = tmp_path / str(i)
        with pytest.raises(RepositoryError, match=problem):
            fetcher(where, s).fetch("add_sub", http_repo.url(path))
        nothing_left(where)
    # The truncated and the stalled downloads were tried again before failing.
    assert http_repo.gets("/truncated.tgz") == 2
    assert http_repo.gets("/stalled.tgz") == 2


def test_metadata_and_link_local_hosts_are_refused_unless_allowed(tmp_path: Path) -> None:
    repos = Repositories(settings())
    for uri in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]/m.tgz"):
        with pytest.raises(RepositoryError, match="link-local or cloud metadata"):
            repos.stat(uri)


# ---------------------------------------------------------------- S3


def s3_settings(moto: MotoS3, tmp_path: Path, **creds: str) -> RepositorySettings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        f"store: {{access_key_id: {creds.get('key', moto.access_key)},"
        f" secret_access_key: {creds.get('secret', moto.secret_key)}}}\n"
    )
    repo = Repository(
        prefix="s3://models/",
        endpoint_url=moto.endpoint,
        region="us-east-1",
        addressing_style="path",
        credentials="store",
    )
    return settings(repositories=[repo], secrets_file=secrets)


def test_a_model_directory_from_s3(tmp_path: Path, moto_s3: MotoS3) -> None:
    s = s3_settings(moto_s3, tmp_path)
    info = Repositories(s).stat("s3://models/add_sub")
    assert info.kind == "directory" and info.size > 0
    assert fetcher(tmp_path, s).fetch("add_sub", "s3://models/add_sub")
    assert is_add_sub(tmp_path / "server" / "models" / "add_sub")
    assert not fetcher(tmp_path, s).fetch("add_sub", "s3://models/add_sub")


def test_an_ensembles_empty_version_directory_comes_from_its_s3_folder_marker(
    tmp_path: Path, moto_s3: MotoS3
) -> None:
    # S3 has no directories: the console's "Create folder" (and other tools) leave a marker
    # object, the only way to store an ensemble's empty version directory.
    client = moto_s3.client()
    client.put_object(Bucket="models", Key="ens/pipe/config.pbtxt", Body=b'platform: "ensemble"\n')
    client.put_object(Bucket="models", Key="ens/pipe/1/", Body=b"")
    s = s3_settings(moto_s3, tmp_path)
    for attempt in ("download", "cache"):
        assert fetcher(tmp_path, s).fetch("pipe", "s3://models/ens/pipe") == (attempt == "download")
        model = tmp_path / "server" / "models" / "pipe"
        assert (model / "1").is_dir() and not any((model / "1").iterdir()), attempt
        assert sorted(p.name for p in model.iterdir()) == ["1", "config.pbtxt"]


def test_a_prefix_holding_only_folder_markers_does_not_exist(
    tmp_path: Path, moto_s3: MotoS3
) -> None:
    moto_s3.client().put_object(Bucket="models", Key="hollow/1/", Body=b"")
    with pytest.raises(RepositoryError, match="does not exist"):
        Repositories(s3_settings(moto_s3, tmp_path)).stat("s3://models/hollow")


def test_an_archive_object_from_s3(tmp_path: Path, moto_s3: MotoS3) -> None:
    moto_s3.client().put_object(Bucket="models", Key="packed/add_sub.tar.gz", Body=ADD_SUB)
    s = s3_settings(moto_s3, tmp_path)
    digest = hashlib.sha256(ADD_SUB).hexdigest()
    f = fetcher(tmp_path, s)
    assert f.fetch("add_sub", f"s3://models/packed/add_sub.tar.gz#sha256={digest}")
    assert is_add_sub(tmp_path / "server" / "models" / "add_sub")


def test_wrong_s3_credentials_and_missing_objects_are_named(
    tmp_path: Path, moto_s3: MotoS3
) -> None:
    bad = s3_settings(moto_s3, tmp_path, secret="wrong-secret-value")
    with pytest.raises(RepositoryError, match=r"access denied.*credentials of repository") as exc:
        fetcher(tmp_path, bad).fetch("add_sub", "s3://models/add_sub")
    assert "wrong-secret-value" not in str(exc.value)
    nothing_left(tmp_path)
    good = s3_settings(moto_s3, tmp_path / "g")
    with pytest.raises(RepositoryError, match="does not exist"):
        Repositories(good).stat("s3://models/no-such-model")


def test_the_standard_aws_variables_alone_reach_the_store(
    tmp_path: Path, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert fetcher(tmp_path, settings()).fetch("add_sub", "s3://models/add_sub")
    assert is_add_sub(tmp_path / "server" / "models" / "add_sub")


# ---------------------------------------------------------------- the cache


def test_eviction_keeps_the_cap_and_never_a_model_in_use(
    tmp_path: Path, http_repo: HttpRepo
) -> None:
    for name in ("a", "b", "c"):
        http_repo.files[f"/{name}.tgz"] = Served(ADD_SUB, etag=f'"{name}"')
    size = sum(f.stat().st_size for f in (EXAMPLES / "add_sub").rglob("*") if f.is_file())
    # Room for two models: the third evicts the least recently used one no server holds.
    s = settings(cache_size=int(size * 2.5))
    f = fetcher(tmp_path, s)
    f.fetch("a", http_repo.url("/a.tgz"))
    f.fetch("b", http_repo.url("/b.tgz"))
    f.remove("b")  # b is no longer held; a still is
    f.fetch("c", http_repo.url("/c.tgz"))
    assert f.cache is not None
    assert cached_names(f.cache) == {"a.tgz", "c.tgz"}
    # A cap smaller than what is in use: nothing held is evicted.
    tight = ModelCache(tmp_path / "cache", max_bytes=1)
    assert tight.evict() == []
    assert cached_names(tight) == {"a.tgz", "c.tgz"}
    f.remove("a")
    f.remove("c")
    assert len(tight.evict()) == 2
    assert cached_names(tight) == set()


def cached_names(cache: ModelCache) -> set[str]:
    return {e.uri.rsplit("/", 1)[-1] for e in cache.entries()}


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_a_name_that_is_not_a_directory_in_the_model_directory_is_refused(
    tmp_path: Path, name: str
) -> None:
    f = fetcher(tmp_path, settings())
    server = tmp_path / "server"
    before = sorted(server.rglob("*"))
    with pytest.raises(RepositoryError, match="is not a model directory name"):
        f.fetch(name, (EXAMPLES / "add_sub").as_uri())
    with pytest.raises(RepositoryError, match="is not a model directory name"):
        f.remove(name)
    assert sorted(server.rglob("*")) == before
