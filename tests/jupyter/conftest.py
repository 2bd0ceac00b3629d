"""Fixtures for the notebook tests: a fresh IPython shell with the extension loaded and
pointed at a real daemon, and a kernelspec for this venv's Python in a temporary
JUPYTER_PATH (so kernels started by the tests run this checkout, whatever is installed
in the user's own Jupyter directories)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.conftest import EXAMPLES, Daemon
from tms_console.jupyter.magics import TmsMagics

KERNEL_NAME = "tms-test-python3"
ADD_SUB = EXAMPLES / "add_sub"


class Shell:
    """An `InteractiveShell` that runs cells as a notebook would and keeps what they print."""

    def __init__(self, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
        self.ipython = shell
        self._capsys = capsys

    @property
    def magics(self) -> TmsMagics:
        return next(m for m in self.ipython.configurables if isinstance(m, TmsMagics))

    @property
    def ns(self) -> dict[str, Any]:
        return self.ipython.user_ns  # type: ignore[no-any-return]

    def run(self, cell: str) -> tuple[Any, str, str]:
        """(the cell's result, stdout, stderr); the result's error is in `.error_in_exec`."""
        self._capsys.readouterr()
        result = self.ipython.run_cell(cell, store_history=True)
        out, err = self._capsys.readouterr()
        return result, out, err

    def ok(self, cell: str) -> Any:
        result, out, err = self.run(cell)
        assert result.success, f"{cell!r} failed: {err or out}"
        return result.result


@pytest.fixture
def shell(
    daemon: Daemon,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Shell]:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # its history, not the user's
    ipython = InteractiveShell()
    wrapped = Shell(ipython, capsys)
    wrapped.ok("%load_ext tms_console")
    wrapped.ok(f"%config TmsMagics.target = {daemon.target!r}")
    yield wrapped
    magics = wrapped.magics
    magics.kernel_leases.release_all()
    magics.kernel_leases.unregister()
    ipython.run_line_magic("unload_ext", "tms_console")
    ipython.cleanup()


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUPYTER_PATH holding one kernelspec: this interpreter with ipykernel."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (tms tests)",
                "language": "python",
            }
        )
    )
    return root


@pytest.fixture
def jupyter_env(kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return kernel_dir


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at: `$TMS_TEST_ARTIFACTS`, else
    `test-artifacts/` in the checkout (git-ignored)."""
    import os

    from tests.conftest import ROOT

    path = Path(os.environ.get("TMS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
