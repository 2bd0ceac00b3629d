"""The daemon, sidecar, client and CLI stay headless: importing them loads no UI libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["textual", "IPython", "ipywidgets", "tms_console", "kubernetes"]
MODULES = [
    "tms_core.daemon",
    "tms_core.manager.facade",
    "tms_core.sim.fleet",
    "tms_core.api.client",
    "sidecar.agent",
    "tms_core.cli.main",
]


@pytest.mark.parametrize("module", MODULES)
def test_import_loads_no_ui_or_cluster_library(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert module in loaded
    leaked = sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN)
    assert leaked == [], f"importing {module} loads {', '.join(leaked)}"


def test_no_import_cycles_anywhere() -> None:
    """No module reaches itself through imports, TYPE_CHECKING ones included (grimp reads
    every import statement): the layers a newcomer reads in pyproject.toml are the real ones."""
    import grimp

    graph = grimp.build_graph("tms_core", "sidecar", "tms_console")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == module or imported.startswith(module + "."):
                continue  # a package importing its own submodule is not a cycle
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None and not module.startswith(imported + "."):
                cycles.append(" -> ".join([module, *back]))
    assert cycles == []
