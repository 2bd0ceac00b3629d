"""Short commands load only what they run: `tms --version` no client at all, `tms lease list`
no numpy, settings models or table renderer (benchmarks/cli_start.py times them)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from click.testing import CliRunner

import tms_core
from tms_core.cli.main import cli

HEAVY = ["numpy", "pydantic", "pydantic_settings", "rich", "tritonclient", "yaml"]


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())


def test_version_is_the_installed_packages() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert tms_core.__version__ == importlib.metadata.version("tms")
    assert tms_core.__version__ in result.output


def test_version_loads_no_client() -> None:
    loaded = _loaded_after(
        "from tms_core.cli import main\n"
        "try:\n    main.cli.main(['--version'], standalone_mode=False)\n"
        "except SystemExit:\n    pass"
    )
    assert not {m.split(".")[0] for m in loaded} & {*HEAVY, "grpc"}


def test_lease_list_loads_no_numpy_settings_or_tables() -> None:
    loaded = _loaded_after(
        "import click\n"
        "from tms_core.cli import main, output\n"
        "main.cli.get_command(click.Context(main.cli), 'lease')\n"
        "output.print_table([])"
    )
    assert "tms_core.cli.lease" in loaded
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
    assert "tms_core.config" not in loaded
    assert "tms_core.domain" not in loaded
    assert "tms_core.cli.spec" not in loaded  # lease files: read by acquire only


def test_the_lease_table_aligns_its_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from tms_core.api import tms_pb2 as pb
    from tms_core.cli import output

    output.print_table(
        [
            pb.Lease(id="l-1", state=pb.LEASE_READY, models=[pb.ModelStatus(name="add_sub")]),
            pb.Lease(id="l-22", name="adder", state=pb.LEASE_RELEASED),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "MODELS", "HTTP", "GRPC", "EXPIRES", "IN"]
    assert lines[1].index("READY") == lines[0].index("STATE")
    assert lines[2].startswith("l-22  adder")
