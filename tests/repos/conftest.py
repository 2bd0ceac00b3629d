"""Fixtures of the model repository tests: real S3 (moto) and HTTP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.repos.servers import HttpRepo, MotoS3, running


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto server for the session, with auth enforced and a bucket of models."""
    from tests.conftest import EXAMPLES

    server = MotoS3()
    for s in running(server):
        client = s.client()
        client.create_bucket(Bucket="models")
        s.upload_dir("models", "add_sub", EXAMPLES / "add_sub")
        s.enforce_auth()
        yield s


@pytest.fixture
def http_repo() -> Iterator[HttpRepo]:
    yield from running(HttpRepo())


def leftovers(*roots: Path) -> list[str]:
    """Files under `roots` outside a complete cache entry or model (what a failure leaves)."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            relative = path.relative_to(root).parts
            if relative[0] in ("incoming", "trash") and len(relative) > 1:
                found.append(str(path))
            elif (
                relative[0] not in ("incoming", "trash", "locks", "entries")
                and root.name != "cache"
            ):
                found.append(str(path))
            elif relative[0] == "entries":
                found.append(str(path))
    return found
