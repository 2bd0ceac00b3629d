"""Lease spec files (`tms lease acquire -f lease.yaml`): keys, mistakes, and flags over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tms_core.cli.spec import LeaseSpec, load_spec
from tms_core.lease_request import ModelRequest


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "specs" / "lease.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n"
        "  - {name: add_sub, uri: ./models/add_sub, memory: 64MiB}\n"
        "  - {name: other, uri: 'file:///srv/other', memory: 1000}\n"
        "  - {name: home, uri: /abs/home}\n"
        "name: adder\n"
        "duration: 10m\n"
        "activity_window: 90\n"
        "pool: shared\n"
        "quota: 2\n"
        "tritonserver: bin/tritonserver\n",
    )
    spec = load_spec(path)
    here = path.parent
    assert spec == LeaseSpec(
        models=(
            ModelRequest("add_sub", (here / "models" / "add_sub").as_uri(), 64 * 1024**2),
            ModelRequest("other", "file:///srv/other", 1000),
            ModelRequest("home", "file:///abs/home", 0),
        ),
        name="adder",
        duration_s=600.0,
        activity_window_s=90.0,
        pool="shared",
        quota=2,
        tritonserver=str(here / "bin" / "tritonserver"),
    )


def test_flags_override_the_file(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "models: [{name: a, uri: /a}]\nname: x\nduration: 1m\n"))
    flags = LeaseSpec(models=(ModelRequest("b", "file:///b"),), duration_s=5.0)
    merged = spec.overridden_by(flags)
    assert merged.models == (ModelRequest("b", "file:///b"),)
    assert (merged.name, merged.duration_s) == ("x", 5.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("duraton: 1m\n", "unknown key 'duraton'; did you mean 'duration'?"),
        ("activitywindow: 1m\n", "did you mean 'activity_window'?"),
        ("zzz: 1\n", "unknown key 'zzz'; expected one of models, name, duration"),
        ("models: [{name: a, url: /a}]\n", "models[0]: unknown key 'url'; did you mean 'uri'?"),
        ("models: [{name: a}]\n", "models[0]: uri is missing"),
        ("models: []\n", "models: expected a list"),
        ("models: [add_sub]\n", "models[0]: expected a mapping"),
        ("models: [{name: a, uri: /a, memory: lots}]\n", "models[0]: memory: 'lots' is not a size"),
        ("duration: soon\n", "duration: 'soon' is not a duration"),
        ("duration: true\n", "duration: expected a duration"),
        ("quota: many\n", "quota: expected a whole number"),
        ("name: 3\n", "name: expected a string"),
        ("- a\n- b\n", "expected a mapping of models"),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_a_model_may_name_its_sha256_in_a_spec_file_and_on_the_command_line(
    tmp_path: Path,
) -> None:
    from tms_core.api.client import parse_model_arg

    digest = "0f" * 32
    spec = load_spec(write(tmp_path, f"models: [{{name: a, uri: /a, sha256: '{digest}'}}]\n"))
    assert spec.models is not None and spec.models[0].sha256 == digest
    assert parse_model_arg(f"name=a,uri=https://h/a.tgz,sha256={digest}").sha256 == digest
    with pytest.raises(ValueError, match=r"models\[0\]: sha256: expected 64 hex digits"):
        load_spec(write(tmp_path, "models: [{name: a, uri: /a, sha256: 12}]\n"))
