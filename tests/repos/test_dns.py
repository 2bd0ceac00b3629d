"""A host name is resolved once per connection and the connection goes to the address that
was checked: a DNS answer that changes after the check (rebinding) never reaches a
link-local or metadata address. Real HTTP(S) servers on 127.0.0.1; only the resolver is a
test double (`socket.getaddrinfo`, patched in this process)."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.repos.servers import HttpRepo, MotoS3, Served, make_ca, running, tar_of_dir
from tms_core.repos.fetcher import Fetcher, Repositories
from tms_core.repos.policy import RepositoryError
from tms_core.repos.settings import Repository, RepositorySettings

ADD_SUB = tar_of_dir(EXAMPLES / "add_sub")
METADATA = "169.254.169.254"


class Resolver:
    """Answers for the names in `answers` (the n-th lookup of a name gets its n-th answer,
    the last one repeating); every other name goes to the real resolver."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: Counter[str] = Counter()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in self.answers:
                return real(host, port, *args, **kwargs)
            answers = self.answers[host]
            addresses = answers[min(self.lookups[host], len(answers) - 1)]
            self.lookups[host] += 1
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port or 0)))
                for a in addresses
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    r = Resolver()
    r.install(monkeypatch)
    return r


def settings(**changes: object) -> RepositorySettings:
    return RepositorySettings(stall_timeout=1.0, retries=0).model_copy(update=changes)


def fetcher(tmp_path: Path, s: RepositorySettings) -> Fetcher:
    (tmp_path / "server" / "models").mkdir(parents=True, exist_ok=True)
    return Fetcher(s, tmp_path / "server" / "models", tmp_path / "cache")


def test_the_connection_goes_to_the_address_checked_not_to_a_later_answer(
    tmp_path: Path, http_repo: HttpRepo, resolver: Resolver
) -> None:
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB, etag='"v1"')
    uri = f"http://models.test:{http_repo.port}/add_sub.tgz"
    # The name answers the server's address once, then the metadata address: a check
    # followed by a second lookup to connect would connect to the metadata address.
    resolver.answers["models.test"] = [["127.0.0.1"], [METADATA]]
    info = Repositories(settings()).stat(uri)
    assert info.size == len(ADD_SUB)
    assert resolver.lookups["models.test"] == 1
    # The real server got the request, under the name (Host header), not the address.
    assert http_repo.requests == [("HEAD", "/add_sub.tgz")]
    assert http_repo.hosts == [f"models.test:{http_repo.port}"]
    # The download's own connection looks the name up again (once): now the metadata
    # address, which is refused before any byte goes anywhere.
    with pytest.raises(RepositoryError, match=f"'models.test' resolves to {METADATA}"):
        fetcher(tmp_path, settings()).fetch("add_sub", uri)
    assert http_repo.gets("/add_sub.tgz") == 0
    assert not any((tmp_path / "cache" / "entries").iterdir())


def test_every_address_of_an_answer_is_checked(http_repo: HttpRepo, resolver: Resolver) -> None:
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB)
    resolver.answers["models.test"] = [["127.0.0.1", METADATA]]
    with pytest.raises(RepositoryError, match="link-local or cloud metadata"):
        Repositories(settings()).stat(f"http://models.test:{http_repo.port}/add_sub.tgz")
    assert http_repo.requests == []


def test_a_redirect_target_is_checked_the_same_way(
    tmp_path: Path, http_repo: HttpRepo, resolver: Resolver
) -> None:
    port = http_repo.port
    http_repo.files["/add_sub.tgz"] = Served(ADD_SUB)
    http_repo.files["/to-good"] = Served(b"", redirect=f"http://good.test:{port}/add_sub.tgz")
    http_repo.files["/to-rebound"] = Served(b"", redirect=f"http://rebound.test:{port}/x.tgz")
    resolver.answers["good.test"] = [["127.0.0.1"]]
    resolver.answers["rebound.test"] = [[METADATA]]
    assert fetcher(tmp_path, settings()).fetch("add_sub", http_repo.url("/to-good"))
    assert f"good.test:{port}" in http_repo.hosts
    with pytest.raises(RepositoryError, match=f"'rebound.test' resolves to {METADATA}"):
        Repositories(settings()).stat(http_repo.url("/to-rebound"))
    assert ("HEAD", "/x.tgz") not in http_repo.requests


@pytest.fixture
def https_repo(tmp_path: Path) -> Iterator[tuple[HttpRepo, Path]]:
    ca, context = make_ca(tmp_path, ["models.test"])
    for server in running(HttpRepo(tls=context)):
        yield server, ca


def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path, https_repo: tuple[HttpRepo, Path], resolver: Resolver
) -> None:
    server, ca = https_repo
    server.files["/add_sub.tgz"] = Served(ADD_SUB)
    resolver.answers["models.test"] = [["127.0.0.1"]]
    resolver.answers["other.test"] = [["127.0.0.1"]]
    repos = [
        Repository(prefix=f"https://{name}:{server.port}/", ca_bundle=str(ca))
        for name in ("models.test", "other.test")
    ]
    s = settings(repositories=repos)
    assert fetcher(tmp_path, s).fetch("add_sub", f"https://models.test:{server.port}/add_sub.tgz")
    assert server.hosts[-1] == f"models.test:{server.port}"
    # The same server and address under a name its certificate does not hold: refused.
    with pytest.raises(RepositoryError, match=r"not trusted.*other\.test"):
        Repositories(s).stat(f"https://other.test:{server.port}/add_sub.tgz")


def test_an_s3_endpoint_resolving_to_a_metadata_address_is_refused(
    moto_s3: MotoS3, resolver: Resolver
) -> None:
    resolver.answers["store.test"] = [[METADATA]]
    repo = Repository(
        prefix="s3://models/",
        endpoint_url=f"http://store.test:{moto_s3.port}",
        region="us-east-1",
        addressing_style="path",
        anonymous=True,
    )
    with pytest.raises(RepositoryError, match=f"'store.test' resolves to {METADATA}"):
        Repositories(settings(repositories=[repo])).stat("s3://models/add_sub")
