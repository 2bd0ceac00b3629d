"""`LeaseOptions`, the one acquire-options type: every field crosses the wire and back, and
every field can be set from a spec file and from the flags.

The cases are made from `dataclasses.fields(LeaseOptions)`, so a field added there but not to
the conversion (`tms_core.api.convert`) or to the CLI (`tms_core.cli.spec`) fails here."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import click
import pytest

from tms_core.api import tms_pb2 as pb
from tms_core.api.convert import acquire_request_from_pb, acquire_request_to_pb
from tms_core.cli.lease import acquire_options, spec_from_flags
from tms_core.cli.spec import LeaseSpec, load_spec
from tms_core.domain import LeaseAutoscale
from tms_core.lease_request import LeaseOptions, ModelRequest

# A value other than the default for every field (gpus=0: set, which is not the same as None).
SAMPLES: dict[str, Any] = {
    "name": "adder",
    "duration_s": 600.0,
    "activity_window_s": 60.0,
    "pool": "shared",
    "quota": 2,
    "tritonserver": "/opt/triton/bin/tritonserver",
    "gpus": 0,
    "gpu_product": "A100",
    "node_selector": {"zone": "lab"},
    "exclusive": True,
    "colocate_with": ("adder", "team=a"),
    "avoid": ("l-000000000001",),
    "labels": {"team": "b", "tier": "gold"},
    "priority": 5,
    "autoscale": LeaseAutoscale(
        min_replicas=2, max_replicas=6, metric="nv_pending_requests", target=150.0
    ),
}
# The same values as a spec file writes them.
SPEC_LINES: dict[str, str] = {
    "name": "name: adder",
    "duration_s": "duration: 10m",
    "activity_window_s": "activity_window: 1m",
    "pool": "pool: shared",
    "quota": "quota: 2",
    "tritonserver": "tritonserver: /opt/triton/bin/tritonserver",
    "gpus": "gpus: 0",
    "gpu_product": "gpu_product: A100",
    "node_selector": "node_selector: {zone: lab}",
    "exclusive": "exclusive: true",
    "colocate_with": "colocate_with: [adder, team=a]",
    "avoid": "avoid: [l-000000000001]",
    "labels": "labels: {team: b, tier: gold}",
    "priority": "priority: 5",
    "autoscale": "autoscale: {min_replicas: 2, max_replicas: 6, metric: nv_pending_requests, "
    "target: 150}",
}
# And as flags.
FLAGS: dict[str, list[str]] = {
    "name": ["--name", "adder"],
    "duration_s": ["--duration", "10m"],
    "activity_window_s": ["--activity-window", "1m"],
    "pool": ["--pool", "shared"],
    "quota": ["--quota", "2"],
    "tritonserver": ["--tritonserver", "/opt/triton/bin/tritonserver"],
    "gpus": ["--gpus", "0"],
    "gpu_product": ["--gpu-product", "A100"],
    "node_selector": ["--node-selector", "zone=lab"],
    "exclusive": ["--exclusive"],
    "colocate_with": ["--colocate-with", "adder", "--colocate-with", "team=a"],
    "avoid": ["--avoid", "l-000000000001"],
    "labels": ["--label", "team=b", "--label", "tier=gold"],
    "priority": ["--priority", "5"],
    "autoscale": [
        "--autoscale",
        "2:6",
        "--autoscale-metric",
        "nv_pending_requests",
        "--autoscale-target",
        "150",
    ],
}
FIELDS = [f.name for f in fields(LeaseOptions)]
MODELS = [
    ModelRequest("add_sub", "file:///models/add_sub", 64 * 1024**2),
    ModelRequest("other", "s3://bucket/other"),
]


def default(f: Field[Any]) -> Any:
    return f.default if f.default_factory is MISSING else f.default_factory()


def one(field: str) -> LeaseOptions:
    """The default options but for `field`, set to its sample."""
    return LeaseOptions(**{field: SAMPLES[field]})


def test_every_field_has_a_sample_that_is_not_its_default() -> None:
    for table in (SAMPLES, SPEC_LINES, FLAGS):
        assert sorted(table) == sorted(FIELDS)
    for f in fields(LeaseOptions):
        assert SAMPLES[f.name] != default(f), f"{f.name}'s sample is its default"


def over_the_wire(
    models: list[ModelRequest], options: LeaseOptions
) -> tuple[list[ModelRequest], LeaseOptions]:
    sent = acquire_request_to_pb(models, options).SerializeToString()
    return acquire_request_from_pb(pb.AcquireRequest.FromString(sent))


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_round_trips_through_protobuf(field: str) -> None:
    assert over_the_wire(MODELS, one(field)) == (MODELS, one(field))


def test_all_fields_and_the_defaults_round_trip() -> None:
    everything = LeaseOptions(**SAMPLES)
    assert over_the_wire(MODELS, everything) == (MODELS, everything)
    assert over_the_wire([], LeaseOptions()) == ([], LeaseOptions())
    assert acquire_request_to_pb(MODELS) == acquire_request_to_pb(MODELS, LeaseOptions())


def test_the_wire_format_is_the_protos() -> None:
    """What goes out is what the .proto says, field by field (gpus and autoscale: unset when
    not asked for)."""
    assert acquire_request_to_pb(MODELS, LeaseOptions(**SAMPLES)) == pb.AcquireRequest(
        models=[
            pb.ModelSpec(name="add_sub", uri="file:///models/add_sub", memory_bytes=64 * 1024**2),
            pb.ModelSpec(name="other", uri="s3://bucket/other"),
        ],
        name="adder",
        duration_s=600.0,
        activity_window_s=60.0,
        pool="shared",
        quota=2,
        tritonserver="/opt/triton/bin/tritonserver",
        gpus=0,
        gpu_product="A100",
        node_selector={"zone": "lab"},
        exclusive=True,
        colocate_with=["adder", "team=a"],
        avoid=["l-000000000001"],
        labels={"team": "b", "tier": "gold"},
        priority=5,
        autoscale=pb.Autoscale(
            min_replicas=2, max_replicas=6, metric="nv_pending_requests", target=150.0
        ),
    )
    bare = acquire_request_to_pb([], LeaseOptions())
    assert not bare.HasField("gpus") and not bare.HasField("autoscale")
    assert bare == pb.AcquireRequest()


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_can_be_set_from_a_spec_file(tmp_path: Path, field: str) -> None:
    path = tmp_path / "lease.yaml"
    path.write_text(f"models: [{{name: a, uri: /m/a}}]\n{SPEC_LINES[field]}\n")
    spec = load_spec(path)
    assert spec.options() == one(field)
    assert spec.models == (ModelRequest("a", "file:///m/a"),)


def test_an_empty_spec_asks_for_the_defaults() -> None:
    assert LeaseSpec().options() == LeaseOptions()


def from_flags(args: list[str]) -> LeaseSpec:
    specs: list[LeaseSpec] = []

    @click.command()
    @acquire_options
    def command(**flags: Any) -> None:
        for key in ("spec_file", "no_wait", "dry_run", "fmt"):
            flags.pop(key)
        specs.append(spec_from_flags(**flags))

    command.main(args, standalone_mode=False)
    (spec,) = specs
    return spec


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_can_be_set_by_a_flag(field: str) -> None:
    assert from_flags(FLAGS[field]).options() == one(field)
