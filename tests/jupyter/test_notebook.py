"""examples/notebooks/quickstart.ipynb, executed by nbclient against a real daemon."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, Daemon
from tests.jupyter.conftest import KERNEL_NAME, artifacts_dir
from tms_core.api import tms_pb2 as pb

pytestmark = pytest.mark.triton

NOTEBOOK = ROOT / "examples" / "notebooks" / "quickstart.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _text(cell: nbformat.NotebookNode) -> str:
    """What the cell shows: its printed text (pieces of one line join up, as in Jupyter),
    then each result's text and HTML."""
    printed = "".join(out.get("text", "") for out in cell.get("outputs", []))
    shown = [
        out.get("data", {}).get(kind, "")
        for out in cell.get("outputs", [])
        for kind in ("text/plain", "text/html")
    ]
    return "\n".join([printed, *shown])


def test_quickstart_runs_every_cell_and_keeps_the_widget_views(
    daemon: Daemon, jupyter_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMS_TARGET", daemon.target)  # the kernel's daemon, as a user sets it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    nbformat.write(nb, artifacts_dir() / "quickstart.executed.ipynb")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    by_source = {c.source.splitlines()[0]: c for c in code}

    assert daemon.target in _text(by_source["%tms target"])
    acquired = _text(next(c for c in code if "lease = %tms acquire" in c.source))
    assert "READY (" in acquired and "quickstart" in acquired
    assert "OUTPUT0" in _text(by_source["import numpy as np"])
    assert "True" in _text(by_source['client = lease.client("http")'])
    assert " ms" in _text(by_source["%tms infer quickstart INPUT0=1,2,3,4"])
    assert "second" in _text(by_source["%tms leases"])

    # The widget cells hold widget views, and the notebook keeps their state: the
    # dashboard's occupancy bars and leases table, the inference form's input boxes.
    for first_line in ("dashboard = %tms dashboard", "%tms infer-widget quickstart"):
        views = [o for o in by_source[first_line].outputs if WIDGET_VIEW in o.get("data", {})]
        assert views, f"no widget view in the output of {first_line!r}"
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    models = [s["state"] for s in state.values()]
    assert any(m.get("description") == "declared" for m in models)  # the bars
    assert any("tms-leases-table" in m.get("_dom_classes", []) for m in models)  # the table
    # The last cell closed the dashboard: it said so before its threads stopped.
    assert any("stopped</span>" in str(m.get("value", "")) for m in models)
    assert {"INPUT0", "INPUT1"} <= {m.get("description") for m in models}  # the form

    # The notebook released what it acquired.
    assert not [x for x in daemon.client.list_leases() if x.state != pb.LEASE_RELEASED]
