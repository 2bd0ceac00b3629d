"""`tms target …` and which daemon a command talks to: -t, $TMS_TARGET, the saved default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tms_core.cli.main import cli
from tms_core.cli.target_store import normalize_address, resolve, targets_file


@pytest.fixture
def targets_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "targets.yaml"
    monkeypatch.setenv("TMS_TARGETS_FILE", str(path))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_add_list_set_remove(targets_path: Path) -> None:
    assert run("target", "add", "prod", "http://10.0.0.5:30400/")[0] == 0
    assert run("target", "add", "local", "127.0.0.1:30345")[0] == 0
    code, out, _ = run("target", "set", "prod")
    assert code == 0 and "prod" in out and "10.0.0.5:30400" in out
    assert yaml.safe_load(targets_path.read_text()) == {
        "default": "prod",
        "targets": {"local": "127.0.0.1:30345", "prod": "10.0.0.5:30400"},
    }

    code, out, _ = run("-z", "target", "list")
    assert code == 0
    assert out.splitlines() == ["local\t127.0.0.1:30345\tfalse", "prod\t10.0.0.5:30400\ttrue"]
    code, out, _ = run("target", "list")
    assert "* " in out and "prod" in out and "ADDRESS" in out

    code, out, _ = run("target", "remove", "prod", "-z")
    assert (code, out) == (0, "prod\n")
    assert yaml.safe_load(targets_path.read_text()) == {
        "default": None,
        "targets": {"local": "127.0.0.1:30345"},
    }
    assert run("target", "rm", "local")[0] == 0
    code, out, _ = run("target", "list", "-o", "json")
    assert (code, out.strip()) == (0, "[]")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("target", "add", "has:colon", "h:1"), "target name 'has:colon'"),
        (("target", "add", "x", "nohost"), "'nohost': expected host:port"),
        (("target", "add", "x", "h:99999"), "the port is not a number from 1 to 65535"),
        (("target", "add", "x", "grpc://h:1"), "unsupported scheme 'grpc'"),
        (("target", "set", "nope"), "no saved target named 'nope'"),
        (("target", "remove", "nope"), "no saved target named 'nope'"),
    ],
)
def test_mistakes_are_one_line(targets_path: Path, args: tuple[str, ...], message: str) -> None:
    code, out, err = run(*args)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_adding_a_saved_name_twice_is_refused(targets_path: Path) -> None:
    run("target", "add", "prod", "h:1")
    code, _, err = run("target", "add", "prod", "h:2")
    assert code == 1 and "already exists (h:1)" in err and "tms target remove prod" in err


def test_unknown_name_suggests_the_closest(targets_path: Path) -> None:
    run("target", "add", "production", "h:1")
    with pytest.raises(ValueError, match="did you mean 'production'"):
        resolve("prodution")


def test_resolution_order(targets_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(None) == "127.0.0.1:30345"
    run("target", "add", "saved", "10.1.1.1:1000")
    run("target", "add", "other", "10.2.2.2:2000")
    run("target", "set", "saved")
    assert resolve(None) == "10.1.1.1:1000"
    monkeypatch.setenv("TMS_TARGET", "other")
    assert resolve(None) == "10.2.2.2:2000"
    monkeypatch.setenv("TMS_TARGET", "http://env:3000")
    assert resolve(None) == "env:3000"
    assert resolve("saved") == "10.1.1.1:1000"
    assert resolve("flag:4000") == "flag:4000"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("h:1", "h:1"),
        ("http://h:1", "h:1"),
        ("https://h:1/", "https://h:1"),
        ("http://h", "h:30345"),
        ("http://[::1]:5", "[::1]:5"),
        ("[::1]:5", "[::1]:5"),
    ],
)
def test_normalize_address(text: str, address: str) -> None:
    assert normalize_address(text) == address


def test_targets_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TMS_TARGETS_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert targets_file() == tmp_path / "tms" / "targets.yaml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert targets_file() == Path.home() / ".config" / "tms" / "targets.yaml"


def test_a_broken_targets_file_names_itself(targets_path: Path) -> None:
    targets_path.parent.mkdir(parents=True)
    targets_path.write_text("targets: [oops\n")
    code, _, err = run("target", "list")
    assert code == 1 and str(targets_path) in err and "not valid YAML" in err
    targets_path.write_text("defualt: x\n")
    code, _, err = run("target", "list")
    assert code == 1 and "unknown key 'defualt'" in err
