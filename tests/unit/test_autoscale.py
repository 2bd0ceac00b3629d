"""Autoscaling leases: the fields from the CLI and spec files through the API to the store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.conftest import Harness, request
from tests.unit.test_store import a_lease
from tms_core.api import tms_pb2 as pb
from tms_core.api.convert import acquire_request_to_pb, autoscale_from_pb, lease_to_pb
from tms_core.cli.lease import spec_from_flags
from tms_core.cli.spec import load_spec, parse_replicas
from tms_core.domain import LeaseAutoscale
from tms_core.errors import InvalidArgument
from tms_core.lease_request import LeaseOptions
from tms_core.store import Store


def test_spec_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "lease.yaml"
    path.write_text(
        "models: [{name: a, uri: /m/a}]\n"
        "autoscale: {min_replicas: 2, max_replicas: 6, target: 150}\n"
    )
    spec = load_spec(path)
    assert spec.autoscale == {"min_replicas": 2, "max_replicas": 6, "target": 150}
    # A flag replaces what it names and keeps the rest of the file's.
    merged = spec.overridden_by(
        spec_from_flags(
            (), None, None, None, None, None, None, autoscale_metric="nv_pending_requests"
        )
    )
    assert merged.options().autoscale == LeaseAutoscale(
        min_replicas=2, max_replicas=6, metric="nv_pending_requests", target=150
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "autoscale: {max_replica: 3}",
            "autoscale: unknown key 'max_replica'; did you mean 'max_replicas'?",
        ),
        (
            "autoscale: {min_replicas: -1}",
            "autoscale.min_replicas: expected a whole number of at least 0",
        ),
        (
            "autoscale: {max_replicas: 0}",
            "autoscale.max_replicas: expected a whole number of at least 1",
        ),
        ("autoscale: {park_after: soon}", "autoscale.park_after: .soon. is not a duration"),
        ("autoscale: {target: -1}", "autoscale.target: expected a number above 0"),
        ("autoscale: 3", "autoscale: expected a mapping of min_replicas, max_replicas"),
    ],
)
def test_spec_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lease.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_spec(path)


def test_replicas_flag() -> None:
    assert parse_replicas("2:8") == {"min_replicas": 2, "max_replicas": 8}
    assert parse_replicas("4") == {"min_replicas": 1, "max_replicas": 4}
    assert parse_replicas("0:3") == {"min_replicas": 0, "max_replicas": 3}
    with pytest.raises(ValueError, match=r"--autoscale: '4:2' needs 0 <= MIN <= MAX"):
        parse_replicas("4:2")
    with pytest.raises(ValueError, match=r"--autoscale: '0:0' needs 0 <= MIN <= MAX and MAX >= 1"):
        parse_replicas("0:0")
    with pytest.raises(ValueError, match=r"--autoscale: 'lots' is not MIN:MAX"):
        parse_replicas("lots")


def test_the_request_carries_it_and_defaults_fill_in() -> None:
    message = acquire_request_to_pb([], LeaseOptions(autoscale=LeaseAutoscale(2, 4, "m", 1.5)))
    assert message.HasField("autoscale")
    assert autoscale_from_pb(message.autoscale) == LeaseAutoscale(2, 4, "m", 1.5)
    assert not acquire_request_to_pb([]).HasField("autoscale")
    # What arrives at 0 or "" (from another client, say) takes the documented defaults.
    assert autoscale_from_pb(pb.Autoscale(max_replicas=3)) == LeaseAutoscale(
        min_replicas=1, max_replicas=3, metric="nv_inference_queue_duration_ms", target=200.0
    )
    assert autoscale_from_pb(pb.Autoscale(min_replicas=2)).max_replicas == 2
    # 0 said (not left out) asks for parking, which the wire tells apart from unset.
    parks = LeaseAutoscale(min_replicas=0, max_replicas=2, park_after_s=90.0)
    sent = acquire_request_to_pb([], LeaseOptions(autoscale=parks)).autoscale
    assert sent.HasField("min_replicas") and autoscale_from_pb(sent) == parks


def test_a_partial_spec_takes_the_same_defaults(tmp_path: Path) -> None:
    path = tmp_path / "lease.yaml"
    path.write_text("models: [{name: a, uri: /m/a}]\nautoscale: {min_replicas: 3}\n")
    assert load_spec(path).options().autoscale == LeaseAutoscale(
        min_replicas=3, max_replicas=3, metric="nv_inference_queue_duration_ms", target=200.0
    )


def test_the_lease_message_shows_it() -> None:
    lease = replace(a_lease(), autoscale=LeaseAutoscale(1, 4, "m", 2.5))
    shown = lease_to_pb(lease, None).autoscale
    assert (shown.min_replicas, shown.max_replicas, shown.metric, shown.target) == (1, 4, "m", 2.5)
    assert not lease_to_pb(a_lease(), None).HasField("autoscale")
    assert isinstance(shown, pb.Autoscale)


async def test_the_store_keeps_it(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    lease = replace(a_lease(), autoscale=LeaseAutoscale(2, 5, "nv_x", 0.5))
    async with store.transaction() as tx:
        await tx.put_lease(lease)
        await tx.put_lease(a_lease("l-000000000002"))
    await store.close()
    store = await Store.open(tmp_path / "state.db")
    leases, _ = await store.load()
    await store.close()
    assert {x.id: x.autoscale for x in leases} == {
        "l-000000000001": LeaseAutoscale(2, 5, "nv_x", 0.5),
        "l-000000000002": None,
    }


async def test_pool_leases_do_not_autoscale(harness: Harness) -> None:
    with pytest.raises(InvalidArgument, match="pool"):
        await harness.manager.acquire(
            [request("a")],
            LeaseOptions(pool="p", quota=1, autoscale=LeaseAutoscale(max_replicas=2)),
        )
