"""Importing a module loads only what it needs, checked in a fresh interpreter: the daemon,
sidecar, client and CLI load no UI libraries, the simulator's path loads no SQLite, and the
sidecar (which a cold lease waits for) starts without tritonclient, numpy, pydantic, the
repository machinery (imported in a thread while Triton starts), prometheus-client (until
its metrics are asked for), NVML or every service's generated gRPC stubs; and that
machinery, which its first fetch waits for, reads its settings without pydantic and loads
neither YAML nor the S3 and HTTP sources until a URI or a secrets file needs them."""

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
# The in-memory store and the simulator built on it run without a database.
SQLITE = ["aiosqlite", "sqlite3", "tms_core.store.sqlite"]
SQLITE_FREE = ["tms_core.store.memory", "tms_core.store.protocol", "tms_core.sim.fleet"]
# The local router starts on the daemon's path (and again after a crash): standard library;
# only `--wake-grpc` (the Kubernetes activator) loads grpc, when it starts.
ROUTER_SLOW = ["grpc", "tms_core.api", "pydantic", "kubernetes"]
SIDECAR_SLOW = [
    "prometheus_client",
    "tritonclient",
    "numpy",
    "pydantic",
    "pynvml",
    "tms_core.api.tms_pb2_grpc",
    "tms_core.repos",
]
FETCH_SLOW = [
    *SIDECAR_SLOW[:-1],
    "tms_core.settings_base",
    "tms_core.repos.settings",
    "yaml",
    "tms_core.repos.sources.s3",
    "boto3",
    "botocore",
    "s3transfer",
    "tms_core.repos.sources.http",
]


def loaded_by(module: str) -> set[str]:
    """The names in sys.modules after importing `module` alone."""
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
    return loaded


def leaks(loaded: set[str], forbidden: list[str]) -> list[str]:
    return sorted(
        name for name in loaded if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    )


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [pytest.param(m, FORBIDDEN, id=f"{m}-no-ui") for m in MODULES]
    + [pytest.param(m, SQLITE, id=f"{m}-no-sqlite") for m in SQLITE_FREE]
    + [pytest.param("sidecar.__main__", SIDECAR_SLOW, id="sidecar-starts-light")]
    + [pytest.param("tms_core.router.__main__", ROUTER_SLOW, id="router-starts-light")]
    + [pytest.param("sidecar.fetch", FETCH_SLOW, id="sidecar-fetches-light")],
)
def test_import_loads_nothing_it_should_not(module: str, forbidden: list[str]) -> None:
    leaked = leaks(loaded_by(module), forbidden)
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
