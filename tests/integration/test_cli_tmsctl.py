"""Each `tms`/`tmsctl` command group end to end against a real daemon and real Triton.

Command lines are written the way the TMS documentation writes them (`-t` and `-z` after the
subcommand) as well as the `tms` way (before it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Daemon, wait_for
from tms_core.api import tms_pb2 as pb
from tms_core.backends.local import free_ports

pytestmark = pytest.mark.triton

ADD_SUB = f"name=add_sub,uri={(EXAMPLES / 'add_sub').as_uri()}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Saved targets go to a throw-away config dir (the CLI runs with this environment)."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def test_lease_create_status_list_renew_name_release_events(daemon: Daemon) -> None:
    t = daemon.target
    lease_id = ok(daemon.cli("lease", "create", "-m", ADD_SUB, "-t", t)).strip()
    assert lease_id.startswith("l-") and "\n" not in lease_id

    status = ok(daemon.cli("lease", "status", lease_id, "-t", t))
    assert f"lease {lease_id}" in status and "READY" in status
    [row] = rows(ok(daemon.cli("-z", "lease", "list")))
    assert row[:4] == [lease_id, "-", "READY", "add_sub"]
    assert row[4].startswith("127.0.0.1:") and row[6].endswith("Z")

    before = daemon.client.status(lease_id).expires_at
    [row] = rows(ok(daemon.cli("lease", "renew", lease_id, "--duration", "2h", "-t", t, "-z")))
    assert row[2] == "READY" and daemon.client.status(lease_id).expires_at > before

    assert ok(daemon.cli("lease", "name", "create", "adder", lease_id, "-t", t, "-z")) == "adder\n"
    [row] = rows(ok(daemon.cli("lease", "name", "list", "-z", "-t", t)))
    assert row[:3] == ["adder", lease_id, "-"] and row[3].startswith("127.0.0.1:")
    human = ok(daemon.cli("lease", "name", "list"))
    assert "adder" in human and lease_id in human
    assert ok(daemon.cli("lease", "name", "delete", "adder", "-z")) == "adder\n"
    assert ok(daemon.cli("lease", "name", "list", "-z")) == ""
    assert "not found" in one_line_error(daemon.cli("lease", "name", "delete", "adder"))

    [row] = rows(ok(daemon.cli("lease", "release", lease_id, "-t", t, "-z")))
    assert row[:3] == [lease_id, "-", "RELEASED"]
    assert ok(daemon.cli("-z", "lease", "list")) == ""

    events = ok(daemon.cli("events", "-t", t)).splitlines()
    assert any(line.endswith(f"  lease  {lease_id}  READY") for line in events), events
    assert any(f"  lease  {lease_id}  RELEASED" in line for line in events), events
    parsed = [json.loads(line) for line in ok(daemon.cli("events", "-o", "json")).splitlines()]
    ready = [e for e in parsed if e["kind"] == "lease" and e["state"] == "READY"]
    assert [e["id"] for e in ready] == [lease_id]
    since = ready[0]["seq"]
    later = rows(ok(daemon.cli("-z", "events", "--since", str(since))))
    assert later and all(int(r[0]) > since for r in later)


def test_pool_create_lease_status_delete(daemon: Daemon) -> None:
    t = daemon.target
    assert ok(daemon.cli("pool", "create", "shared", "--quota", "2", "--max", "1", "-t", t, "-z"))
    assert rows(ok(daemon.cli("pool", "list", "-z")))[0][:5] == ["shared", "2", "0", "1", "0"]
    line = one_line_error(daemon.cli("pool", "create", "shared", "--quota", "2", "--max", "1"))
    assert "already exists" in line

    lease_id = ok(
        daemon.cli("lease", "create", "-m", ADD_SUB, "--pool", "shared", "--quota", "1", "-z")
    ).strip()
    assert daemon.client.status(lease_id).state == pb.LEASE_READY
    [server] = rows(ok(daemon.cli("pool", "status", "shared", "-t", t, "-z")))
    assert server[1:5] == ["RUNNING", "1", "1", lease_id]
    human = ok(daemon.cli("pool", "status", "shared"))
    assert "pool shared" in human and lease_id in human
    assert json.loads(ok(daemon.cli("pool", "status", "shared", "-o", "json")))["servers"][0][
        "leases"
    ] == [lease_id]

    line = one_line_error(daemon.cli("lease", "create", "-m", ADD_SUB, "--pool", "nope"))
    assert "pool" in line and "nope" in line
    assert "still holds leases" in one_line_error(daemon.cli("pool", "delete", "shared"))
    ok(daemon.cli("lease", "release", lease_id))
    assert ok(daemon.cli("pool", "delete", "shared", "-z")) == "shared\n"
    assert ok(daemon.cli("pool", "list", "-z")) == ""
    assert "not found" in one_line_error(daemon.cli("pool", "status", "shared"))


def test_allowlist_gates_the_tritonserver_of_a_lease(daemon: Daemon, tmp_path: Path) -> None:
    [default] = ok(daemon.cli("allowlist", "list")).splitlines()
    assert default.endswith("/tritonserver") and os.access(default, os.X_OK)

    # A second Triton: it exits at once, so a lease on it fails after passing validation.
    other = tmp_path / "triton" / "bin" / "tritonserver"
    other.parent.mkdir(parents=True)
    (tmp_path / "triton" / "backends").mkdir()
    other.write_text("#!/bin/sh\nexit 3\n")
    other.chmod(0o755)
    create = ("lease", "create", "-m", ADD_SUB, "--tritonserver", str(other), "--no-wait")

    line = one_line_error(daemon.cli(*create))
    assert "tritonserver" in line and str(other) in line and "allowlist" in line
    assert daemon.client.list_leases(include_ended=True) == []

    assert ok(daemon.cli("allowlist", "add", str(other), "-z")) == f"{other}\n"
    assert ok(daemon.cli("allowlist", "list")).splitlines() == [default, str(other)]
    lease_id = ok(daemon.cli(*create)).strip()
    assert lease_id.startswith("l-")
    wait_for(
        lambda: daemon.client.status(lease_id).state == pb.LEASE_FAILED,
        timeout=20,
        what="the lease on the exiting tritonserver to fail",
    )
    assert "exited with code 3" in daemon.client.status(lease_id).reason

    assert ok(daemon.cli("allowlist", "rm", str(other), "-z")) == f"{other}\n"
    assert json.loads(ok(daemon.cli("allowlist", "list", "-o", "json"))) == [default]
    assert "not on the allowlist" in one_line_error(daemon.cli("allowlist", "rm", str(other)))


def test_saved_targets_and_the_tmsctl_entry_point(daemon: Daemon, config_home: Path) -> None:
    (unused,) = free_ports(1)
    nowhere = f"127.0.0.1:{unused}"
    assert ok(daemon.cli("target", "add", "local", f"http://{daemon.target}")) != ""
    assert ok(daemon.cli("target", "add", "gone", nowhere, "-z")) == "gone\n"
    assert (config_home / "tms" / "targets.yaml").exists()

    # -t NAME wins over $TMS_TARGET, which here points nowhere.
    assert (
        ok(
            daemon.cli("-t", "local", "lease", "list", "-z"),
        )
        == ""
    )
    assert (
        ok(
            daemon.cli("lease", "list", "-t", "local"),
        )
        != ""
    )
    line = one_line_error(daemon.cli("lease", "list", target=nowhere))
    assert "daemon unreachable" in line

    # With neither -t nor $TMS_TARGET, the saved default is used.
    env = {k: v for k, v in daemon.env().items() if k != "TMS_TARGET"}
    tmsctl = Path(sys.executable).with_name("tmsctl")
    command = [str(tmsctl)] if tmsctl.exists() else [sys.executable, "-m", "tms_core.cli.main"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env, timeout=60
        )

    ok(run("target", "set", "gone"))
    assert "daemon unreachable" in one_line_error(run("lease", "list"))
    ok(run("target", "set", "local"))
    assert rows(ok(run("-z", "target", "list"))) == [
        ["gone", nowhere, "false"],
        ["local", daemon.target, "true"],
    ]
    lease_id = ok(run("lease", "create", "-m", ADD_SUB, "-z")).strip()
    assert rows(ok(run("lease", "list", "-z")))[0][0] == lease_id
    ok(run("lease", "release", lease_id))
    ok(run("target", "remove", "local"))
    assert rows(ok(run("target", "list", "-z"))) == [["gone", nowhere, "false"]]
