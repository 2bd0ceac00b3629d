"""The create form's values become the client's arguments: models and `LeaseOptions`."""

from __future__ import annotations

from pathlib import Path

from tms_console.console.forms import check_form
from tms_core.domain import LeaseAutoscale
from tms_core.lease_request import LeaseOptions, ModelRequest


def test_the_form_gives_models_and_options(tmp_path: Path) -> None:
    form = check_form(
        name=" adder ",
        models=[("add_sub", str(tmp_path / "add_sub"), "64MiB"), ("", "", "")],
        duration="10m",
        activity_window="1m",
        pool="shared",
        quota="2",
        replicas="2:6",
        target="150",
    )
    assert form.errors == {}
    assert form.acquire_args() == (
        [ModelRequest("add_sub", (tmp_path / "add_sub").as_uri(), 64 * 1024**2)],
        LeaseOptions(
            name="adder",
            duration_s=600.0,
            activity_window_s=60.0,
            pool="shared",
            quota=2,
            autoscale=LeaseAutoscale(min_replicas=2, max_replicas=6, target=150.0),
        ),
    )


def test_an_empty_form_asks_for_the_defaults() -> None:
    form = check_form(
        name="",
        models=[("a", "file:///m/a", "")],
        duration="",
        activity_window="",
        pool="",
        quota="",
    )
    assert form.acquire_args() == ([ModelRequest("a", "file:///m/a")], LeaseOptions())
