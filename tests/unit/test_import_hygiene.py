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
    "tms_core.leases",
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
