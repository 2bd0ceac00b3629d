"""Where the router runs: one CPU of its own by default, or where `--cpu` / `local.router_cpu` says.

Each test starts the real router process, as the daemon does (`tms_core.routing.RouterProcess`)
or as `python -m tms_core.router`, with the CPUs it may use fixed to the first two of this
machine's, and reads the CPUs it ended up allowed from the kernel (`/proc/PID/status`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from tms_core.backends.local import free_ports
from tms_core.config import load_settings
from tms_core.errors import ConfigError
from tms_core.router.routes import Route, applied_path, read_applied, write_routes
from tms_core.routing import RouterProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_cpus() -> Iterator[tuple[int, int]]:
    """Restricts this process (and so the routers it starts) to two CPUs, restored after."""
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a Linux machine with two CPUs or more")
    before = os.sched_getaffinity(0)
    first, second = sorted(before)[:2]
    os.sched_setaffinity(0, {first, second})
    try:
        yield first, second
    finally:
        os.sched_setaffinity(0, before)


def allowed_cpus(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            cpus: set[int] = set()
            for part in line.split(":", 1)[1].strip().split(","):
                low, _, high = part.partition("-")
                cpus.update(range(int(low), int(high or low) + 1))
            return cpus
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


@contextmanager
def router_running(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m tms_core.router ARGS` on an empty table, once it serves: the process and its
    routes file. Stopped when the block ends."""
    routes = tmp_path / "routes.json"
    write_routes(routes, 1, [])
    applied_path(routes).unlink(missing_ok=True)  # a router this test ran before wrote it
    log_path = tmp_path / "router.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tms_core.router", f"--routes={routes}", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        until_applied(proc, routes, 1, log_path)
        yield proc, routes
    finally:
        proc.terminate()
        proc.wait(10)


def until_applied(proc: subprocess.Popen[bytes], routes: Path, version: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while read_applied(applied_path(routes)) != version:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the router did not apply version {version}"
        time.sleep(0.01)


def run_router(tmp_path: Path, *args: str) -> tuple[set[int], str]:
    """Starts the router with ARGS and returns the CPUs it may run on and its log."""
    with router_running(tmp_path, *args) as (proc, _):
        return allowed_cpus(proc.pid), (tmp_path / "router.log").read_text()


def apply(proc: subprocess.Popen[bytes], routes: Path, version: int, *, loading: bool) -> None:
    """Gives the router a table whose one lease is loading (its route holds) or READY."""
    (http,) = free_ports(1)
    route = Route(f"127.0.0.1:{http}", () if loading else ("127.0.0.1:9",), "lease l-1 http")
    write_routes(routes, version, [replace(route, hold=loading)])
    proc.send_signal(signal.SIGHUP)
    until_applied(proc, routes, version, routes.parent / "router.log")


def test_by_default_the_router_keeps_to_the_highest_cpu_it_may_use(
    tmp_path: Path, two_cpus: tuple[int, int]
) -> None:
    cpus, log = run_router(tmp_path)
    assert cpus == {two_cpus[1]}
    assert f"running on CPU {two_cpus[1]}" in log


def test_by_default_the_router_runs_on_any_cpu_while_a_lease_loads_and_is_pinned_again_after(
    tmp_path: Path, two_cpus: tuple[int, int]
) -> None:
    with router_running(tmp_path) as (proc, routes):
        assert allowed_cpus(proc.pid) == {two_cpus[1]}
        apply(proc, routes, 2, loading=True)
        assert allowed_cpus(proc.pid) == set(two_cpus)
        apply(proc, routes, 3, loading=False)
        assert allowed_cpus(proc.pid) == {two_cpus[1]}


def test_a_cpu_given_by_number_is_kept_while_leases_load(
    tmp_path: Path, two_cpus: tuple[int, int]
) -> None:
    with router_running(tmp_path, f"--cpu={two_cpus[1]}") as (proc, routes):
        apply(proc, routes, 2, loading=True)
        assert allowed_cpus(proc.pid) == {two_cpus[1]}


def test_cpu_none_leaves_the_router_where_the_scheduler_puts_it(
    tmp_path: Path, two_cpus: tuple[int, int]
) -> None:
    cpus, log = run_router(tmp_path, "--cpu=none")
    assert cpus == set(two_cpus)
    assert "running on CPU" not in log


def test_a_cpu_number_pins_the_router_there_and_one_it_may_not_use_is_logged(
    tmp_path: Path, two_cpus: tuple[int, int]
) -> None:
    cpus, _ = run_router(tmp_path, f"--cpu={two_cpus[0]}")
    assert cpus == {two_cpus[0]}

    outside = max(two_cpus) + 1
    cpus, log = run_router(tmp_path, f"--cpu={outside}")
    assert cpus == set(two_cpus)
    assert f"CPU {outside} is not among those this process may use" in log


def test_a_bad_cpu_argument_is_refused_naming_what_is_expected(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tms_core.router", f"--routes={tmp_path}/r.json", "--cpu=fast"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--cpu: expected auto, none, or a CPU number, got 'fast'" in result.stderr


def test_the_daemons_router_takes_local_router_cpu(
    tmp_path: Path, two_cpus: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMS_LOCAL__ROUTER_CPU", str(two_cpus[0]))
    settings = load_settings()
    assert settings.local.router_cpu == two_cpus[0]
    router = RouterProcess(tmp_path, cpu=settings.local.router_cpu)
    pid = router.ensure_running(None)
    try:
        assert allowed_cpus(pid) == {two_cpus[0]}
    finally:
        router.stop()


@pytest.mark.parametrize("value", ["fast", "-1", "1.5"])
def test_a_bad_local_router_cpu_names_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMS_LOCAL__ROUTER_CPU", value)
    with pytest.raises(ConfigError, match=r"local\.router_cpu: .*expected auto, none, or a CPU"):
        load_settings()
