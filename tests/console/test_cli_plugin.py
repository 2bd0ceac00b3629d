"""`tms console` reaches the `tms` command through the `tms.cli_plugins` entry point, so
tms_core never imports tms_console; a plugin that fails to load breaks only itself."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from tms_core.cli import main


def test_tms_lists_the_console_and_its_help_works() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "-h"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "console" in listed.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "console", "-h"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "--target" in helped.stdout and "--retry" in helped.stdout


def test_importing_the_cli_loads_no_plugin_and_the_console_no_textual_until_it_runs() -> None:
    probe = (
        "import sys; from tms_core.cli import main; "
        "print('tms_console' in sys.modules); "
        "main.cli.get_command(main.click.Context(main.cli), 'console'); "
        "print('tms_console.cli' in sys.modules, 'textual' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True", "False"], done.stderr


def test_a_plugin_that_fails_to_load_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint(
        name="wobbly", value="no_such_module_xyz:command", group=main.PLUGIN_GROUP
    )

    def entry_points(group: str, name: str | None = None) -> list[importlib.metadata.EntryPoint]:
        assert group == main.PLUGIN_GROUP
        return [broken] if name in (None, "wobbly") else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    group = main.TmsGroup("tms")
    group.add_command(click.Command("kept", callback=lambda: None))
    assert group.list_commands(click.Context(group)) == ["kept", "wobbly"]
    result = CliRunner().invoke(group, ["wobbly", "--any", "thing"], standalone_mode=False)
    assert result.exit_code == 1
    assert "tms wobbly is not available: ModuleNotFoundError" in result.output
    assert CliRunner().invoke(group, ["kept"], standalone_mode=False).exit_code == 0
    assert CliRunner().invoke(group, ["nothing"]).exit_code == 2
