"""Bad input gets one line naming what is wrong and a non-zero exit; the daemon keeps serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Daemon
from tms_core.backends.local import free_ports

pytestmark = pytest.mark.triton


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_input_errors_and_daemon_keeps_serving(daemon: Daemon, tmp_path: Path) -> None:
    assert "no lease with id or name 'l-doesnotexist'" in one_line_error(
        daemon.cli("lease", "status", "l-doesnotexist")
    )
    assert "l-doesnotexist" in one_line_error(daemon.cli("lease", "release", "l-doesnotexist"))

    line = one_line_error(daemon.cli("lease", "acquire", "-m", "name=add_sub"))
    assert "uri= is missing" in line
    line = one_line_error(daemon.cli("lease", "acquire", "-m", "add_sub"))
    assert "expected name=NAME,uri=URI" in line
    line = one_line_error(
        daemon.cli("lease", "acquire", "-m", f"name=x,uri={EXAMPLES}/add_sub,memory=lots")
    )
    assert "memory" in line and "'lots' is not a size" in line

    missing = tmp_path / "nowhere"
    line = one_line_error(daemon.cli("lease", "acquire", "-m", f"name=x,uri={missing}"))
    assert "models[0].uri" in line and "does not exist" in line

    bad = tmp_path / "bad"
    shutil.copytree(EXAMPLES / "add_sub", bad)
    (bad / "config.pbtxt").write_text(
        'name: "bad"\nbackend: "python"\ninput [ { name: "X" data_type: TYPE_NOPE } ]\n'
    )
    line = one_line_error(daemon.cli("lease", "acquire", "-m", f"name=bad,uri={bad}"))
    assert (
        "models[0].uri" in line
        and "config.pbtxt is malformed at line 3" in line
        and "TYPE_NOPE" in line
    )

    line = one_line_error(
        daemon.cli(
            "lease", "acquire", "-m", f"name=add_sub,uri={EXAMPLES}/add_sub", "--name", "Not_DNS"
        )
    )
    assert line.startswith("error: name:") and "DNS-1123" in line

    line = one_line_error(
        daemon.cli(
            "lease", "acquire", "-m", f"name=add_sub,uri={EXAMPLES}/add_sub", "--duration", "soon"
        )
    )
    assert "--duration" in line

    (port,) = free_ports(1)
    line = one_line_error(daemon.cli("lease", "list", target=f"127.0.0.1:{port}"))
    assert "daemon unreachable" in line and str(port) in line

    # After all that the daemon still serves, and nothing was created by the bad requests.
    result = daemon.cli("lease", "list", "-a", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_acquire_json_output_schema(daemon: Daemon) -> None:
    result = daemon.cli(
        "lease",
        "acquire",
        "-m",
        f"name=add_sub,uri={EXAMPLES}/add_sub,memory=64MiB",
        "--name",
        "adder",
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    lease = json.loads(result.stdout)
    assert lease["state"] == "READY" and lease["name"] == "adder" and lease["reason"] == ""
    assert set(lease["endpoints"]) >= {"http", "grpc"}
    assert lease["endpoints"]["http"].startswith("127.0.0.1:")
    assert lease["models"] == [
        {
            "name": "add_sub",
            "uri": (EXAMPLES / "add_sub").as_uri(),
            "memory_bytes": 64 * 1024**2,
            "state": "READY",
            "error": "",
            "load_s": lease["models"][0]["load_s"],
            # A local directory is copied, not downloaded: no download progress to show.
            "bytes_done": 0,
            "bytes_total": 0,
        }
    ]
    assert lease["expires_at"].endswith("Z")

    status = daemon.cli("lease", "status", lease["id"], "-o", "json")
    assert json.loads(status.stdout)["id"] == lease["id"]
    human = daemon.cli("lease", "list")
    assert lease["id"] in human.stdout and "READY" in human.stdout
    released = daemon.cli("lease", "release", lease["id"], "-o", "json")
    assert json.loads(released.stdout)["state"] == "RELEASED"


def test_daemon_without_triton_says_what_is_missing(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "state", f"--tritonserver={tmp_path / 'no-such-tritonserver'}")
    result = daemon.cli(
        "daemon", f"--listen={daemon.target}", f"--state={daemon.state}", *daemon.extra
    )
    line = one_line_error(result)
    assert "no-such-tritonserver" in line and "does not exist" in line


def test_second_daemon_on_the_same_state_is_refused(daemon: Daemon) -> None:
    (port,) = free_ports(1)
    result = daemon.cli("daemon", f"--listen=127.0.0.1:{port}", f"--state={daemon.state}")
    line = one_line_error(result)
    assert "in use by another tms daemon" in line
    assert daemon.client.list_leases() == []
