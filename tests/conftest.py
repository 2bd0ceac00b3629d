"""Fixtures shared by all tests: the example models and a real daemon in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tms_core.api.client import ClientError, TmsClient
from tms_core.backends.local import free_ports

# Tests never reach a cloud metadata service: botocore asks 169.254.169.254 for credentials
# when it finds none, and the daemons and sidecars the tests start inherit this.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Polls `predicate` until it holds; fails the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def processes_under(path: Path) -> list[int]:
    """Pids of processes whose command line mentions `path` (servers keep their dirs there)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


class Daemon:
    """A `tms daemon` subprocess on a free port with its state in `state_dir`."""

    def __init__(self, state_dir: Path, *extra: str, target: str | None = None) -> None:
        self.state_dir = state_dir
        self.extra = extra
        self.target = target or f"127.0.0.1:{free_ports(1)[0]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = TmsClient(self.target)

    @property
    def state(self) -> Path:
        return self.state_dir / "state.db"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")}
        env["TMS_TARGET"] = self.target
        return env

    def start(self) -> Daemon:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tms_core.cli.main",
                "daemon",
                f"--listen={self.target}",
                f"--state={self.state}",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.list_leases()
                return self
            except ClientError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"daemon exited {self.proc.returncode}: {self.log()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        path = self.state_dir / "daemon.log"
        return path.read_text() if path.exists() else ""

    def cli(self, *args: str, target: str | None = None) -> subprocess.CompletedProcess[str]:
        env = self.env()
        if target is not None:
            env["TMS_TARGET"] = target
        return subprocess.run(
            [sys.executable, "-m", "tms_core.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )


def _kill_leftovers(path: Path) -> list[str]:
    left = processes_under(path)
    described = []
    for pid in left:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = "?"
        described.append(f"{pid}: {cmdline[:200]}")
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return described


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons on a shared state dir; stops them and checks nothing is left running."""
    started: list[Daemon] = []

    def make(*extra: str) -> Daemon:
        # A restarted daemon listens where its predecessor did, as it would in real use.
        target = started[-1].target if started else None
        daemon = Daemon(tmp_path / "state", *extra, target=target)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        daemon.client.close()
    left = _kill_leftovers(tmp_path)
    assert not left, f"processes left running after the daemon stopped: {left}"


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon("--idle-grace=1s")
