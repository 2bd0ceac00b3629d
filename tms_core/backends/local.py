"""The local backend: each server is a `tritonserver` process plus a sidecar process.

Both run in sessions of their own, so they outlive a daemon that crashes; their pids, ports and
directory are in the state file, and a daemon started again adopts or stops them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tms_core import modelrepo
from tms_core.backends.base import BackendDefaults
from tms_core.backends.spare_sidecar import SpareSidecar
from tms_core.domain import PublishedState, Server, ServerState
from tms_core.errors import InvalidArgument, TritonNotFound
from tms_core.ids import ServerId
from tms_core.procs import cmdline
from tms_core.repos.fetcher import Repositories
from tms_core.repos.settings import RepositorySettings
from tms_core.router.routes import split_address
from tms_core.routing import RouterProcess, compute_routes
from tms_core.triton.locate import TritonInstall

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (the OS picks; held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


HANDED_KEEP_S = 60.0
"""A port given to a lease or name is not given again for this long, published or not."""


def pick_ports(count: int, taken: set[int]) -> list[int]:
    """Free ports that no live lease or name already has.

    A lease's ports are free on the machine until the router binds them: later when the
    router is being restarted, or when the daemon that gave them out was killed before it
    published them. Meanwhile the OS could offer them again, and two routes on one port
    would give two leases one address."""
    ports = free_ports(count)
    while taken.intersection(ports):
        ports = free_ports(count)
    return ports


def _pids_mentioning(text: str) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != os.getpid()
        and text in cmdline(int(entry.name))
    ]


def _running(pid: int | None, marker: str) -> bool:
    """Whether `pid` is alive and is still the process we started (pids get reused)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    status = Path(f"/proc/{pid}/stat")
    try:
        if status.read_text().split(") ", 1)[1].startswith("Z"):
            return False
    except (OSError, IndexError):
        return False
    return marker in cmdline(pid)


def check_tritonserver(binary: str) -> None:
    """A Triton for the allowlist: an absolute path to an executable file."""
    path = Path(binary)
    if not path.is_absolute():
        raise InvalidArgument("tritonserver", f"{binary} is not an absolute path")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise InvalidArgument("tritonserver", f"{binary} is not an executable file")


SIDECAR_TOKEN_ENV = "TMS_SIDECAR_TOKEN"


def _environment() -> dict[str, str]:
    """The daemon's environment for its children, less any credential of its own."""
    # The sidecars' metrics address is the backend's to give, one port each.
    left_out = ("TMS_TOKEN", SIDECAR_TOKEN_ENV, "TMS_SIDECAR_METRICS_LISTEN")
    return {k: v for k, v in os.environ.items() if k not in left_out}


# In a server's work directory: the URL of its sidecar's metrics (`local.sidecar_metrics`).
SIDECAR_METRICS_FILE = "sidecar-metrics.url"


class LocalBackend(BackendDefaults):
    """Servers as child processes on this machine; stable addresses served by the router."""

    def __init__(
        self,
        *,
        install: TritonInstall,
        work_dir: Path,
        daemon_address: str,
        locate_other: Callable[[Path], TritonInstall] | None = None,
        router: RouterProcess | None = None,
        repositories: RepositorySettings | None = None,
        cache_dir: Path | None = None,
        sidecar_credential: Callable[[str], str] | None = None,
        sidecar_metrics: bool = False,
        wake_hold_s: float = 120.0,
        spare_sidecar_log: Path | None = None,
        triton_args: Sequence[str] = (),
    ) -> None:
        self._triton_args = list(triton_args)
        self._router = router
        self._wake_hold_s = wake_hold_s
        self._sidecar_metrics = sidecar_metrics
        # Kept as given: the sidecars are handed them as JSON (`_repositories_file`).
        self._repository_settings = repositories or RepositorySettings()
        self._repositories = Repositories(self._repository_settings)
        self._cache_dir = cache_dir
        self._sidecar_credential = sidecar_credential
        self._install = install
        self._installs = {str(install.binary): install}
        self._locate_other = locate_other
        self._work_dir = work_dir
        self._daemon_address = daemon_address
        # Our own children, so they can be reaped; adopted servers are not in here.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._published_ports: set[int] = set()
        """The ports of every live lease and name, as last published."""
        self._handed: dict[int, float] = {}
        """Ports given out lately (not yet published, maybe), and when."""
        self.on_exit: Callable[[], None] | None = None
        """Called when a server's process exits (the daemon wakes its reconciler)."""
        # One sidecar started ahead for the next server (`local.spare_sidecar`); its log
        # lives outside `work_dir`, which holds only servers' files.
        self._spare = (
            SpareSidecar(sys.executable, spare_sidecar_log, _environment)
            if spare_sidecar_log is not None
            else None
        )

    @property
    def default_tritonserver(self) -> str:
        return str(self._install.binary)

    def check_model(self, field: str, name: str, uri: str) -> str | None:
        return modelrepo.check_model(field, name, uri, self._repositories)

    async def check_present(self, field: str, name: str, uri: str) -> None:
        await modelrepo.check_present(field, name, uri, self._repositories)

    def check_tritonserver(self, binary: str) -> None:
        check_tritonserver(binary)

    def allocate_ports(self, count: int) -> list[int]:
        now = time.monotonic()
        self._handed = {p: at for p, at in self._handed.items() if at > now - HANDED_KEEP_S}
        ports = pick_ports(count, self._published_ports | set(self._handed))
        self._handed.update((p, now) for p in ports)
        return ports

    def publish(self, state: PublishedState) -> None:
        routes = compute_routes(state, wake_hold_s=self._wake_hold_s)
        self._published_ports = {split_address(r.listen)[1] for r in routes}
        if self._router is not None:
            self._router.update(routes)

    async def settled(self) -> None:
        if self._router is not None:
            await self._router.settled()

    async def revive_router(self) -> int | None:
        if self._router is None:
            return None
        return await self._router.revive()

    def _install_for(self, binary: str) -> TritonInstall:
        if not binary:
            return self._install
        if binary not in self._installs:
            if self._locate_other is None:
                raise TritonNotFound(f"tritonserver {binary} is not known to this backend")
            self._installs[binary] = self._locate_other(Path(binary))
        return self._installs[binary]

    def new_server(
        self, server_id: ServerId, *, capacity_bytes: int, now: float, binary: str = ""
    ) -> Server:
        install = self._install_for(binary)
        http_port, grpc_port, metrics_port = free_ports(3)
        return Server(
            id=server_id,
            state=ServerState.STARTING,
            host=HOST,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            work_dir=str(self._work_dir / server_id),
            capacity_bytes=capacity_bytes,
            created_at=now,
            binary=str(install.binary),
        )

    async def start(self, server: Server) -> None:
        work = Path(server.work_dir)
        self._start_triton(server, work)
        self._start_sidecar(server, work)
        log.info(
            "server %s: tritonserver pid %s, sidecar pid %s",
            server.id,
            server.pid,
            server.sidecar_pid,
        )

    def _start_triton(self, server: Server, work: Path) -> None:
        models = work / "models"
        models.mkdir(parents=True, exist_ok=True)
        install = self._install_for(server.binary)
        env = {**_environment(), **install.env}
        if server.gpus:
            # The server sees only the GPUs placement gave it.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in server.gpus)
        triton_cmd = [
            str(install.binary),
            f"--model-repository={models}",
            "--model-control-mode=explicit",
            f"--backend-directory={install.backend_directory}",
            f"--http-address={server.host}",
            f"--http-port={server.http_port}",
            f"--grpc-address={server.host}",
            f"--grpc-port={server.grpc_port}",
            f"--metrics-address={server.host}",
            f"--metrics-port={server.metrics_port}",
            "--exit-timeout-secs=5",
            "--log-info=true",
            *self._triton_args,
        ]
        server.pid = self._spawn(triton_cmd, env, work / "tritonserver.log")

    def _start_sidecar(self, server: Server, work: Path) -> None:
        sidecar_cmd = [
            sys.executable,
            "-m",
            "sidecar",
            f"--daemon={self._daemon_address}",
            f"--server-id={server.id}",
            f"--triton-grpc={server.grpc_endpoint}",
            f"--triton-metrics={server.metrics_endpoint}",
            f"--model-dir={work / 'models'}",
            f"--repositories={self._repositories_file()}",
        ]
        if self._cache_dir is not None:
            sidecar_cmd.append(f"--cache-dir={self._cache_dir}")
        if self._sidecar_metrics:
            # Loopback only: a port per sidecar, named in a file beside its log.
            address = f"127.0.0.1:{free_ports(1)[0]}"
            sidecar_cmd.append(f"--metrics-listen={address}")
            (work / SIDECAR_METRICS_FILE).write_text(f"http://{address}/metrics\n")
        added = {"PYTHONUNBUFFERED": "1"}
        if self._sidecar_credential is not None:
            # In the environment, not the command line: other users can read command lines.
            added[SIDECAR_TOKEN_ENV] = self._sidecar_credential(server.id)
        if self._spare is not None:
            # The next server's spare is started by `refill`, once no model loads.
            spare = self._spare.take(sidecar_cmd, added, work / "sidecar.log")
            if spare is not None:
                server.sidecar_pid = self._track(spare)
                return
        env = {**_environment(), **added}
        server.sidecar_pid = self._spawn(sidecar_cmd, env, work / "sidecar.log")

    def needs_refill(self) -> bool:
        return self._spare is not None and self._spare.wanted()

    def refill(self) -> None:
        if self._spare is not None:
            self._spare.ensure()

    def _spawn(self, cmd: list[str], env: dict[str, str], log_path: Path) -> int:
        """Starts `cmd` as the leader of a process group of its own (stopping it signals the
        group, which reaches what it started), its output appended to `log_path`."""
        # Popen returns once the child is forked: quick enough to do on the event loop, and
        # the pid must be recorded before anything else happens.
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return self._track(child)

    def _track(self, child: subprocess.Popen[bytes]) -> int:
        """Records a child this backend started, to reap it and hear of its exit."""
        self._children[child.pid] = child
        self._watch_exit(child.pid)
        return child.pid

    def _watch_exit(self, pid: int) -> None:
        """Calls `on_exit` the moment `pid` exits (its pidfd turns readable), so a crash is
        handled at once rather than at the reconciler's next look (up to 0.5 s later)."""
        if self.on_exit is None:
            return
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(pid)
        except (RuntimeError, OSError):
            return  # no loop, or no pidfd (Linux < 5.3): the periodic look finds it

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if self.on_exit is not None:
                self.on_exit()

        loop.add_reader(fd, exited)

    def _repositories_file(self) -> Path:
        """The repository settings for the sidecars, readable by the daemon's user alone.
        They name where credentials are (the secrets file, variables), never hold them."""
        self._work_dir.mkdir(parents=True, exist_ok=True)
        path = self._work_dir / "repositories.json"
        staged = path.with_name(f".repositories.{os.getpid()}.json")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._repository_settings.to_sidecar_json())
        staged.rename(path)
        return path

    def _alive(self, pid: int | None, marker: str) -> bool:
        if pid is None:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        return _running(pid, marker)

    def exit_reason(self, server: Server) -> str | None:
        if not self._alive(server.pid, server.work_dir):
            code = self._exit_code(server.pid)
            return f"tritonserver exited{code}; see {server.work_dir}/tritonserver.log"
        if not self._alive(server.sidecar_pid, server.id):
            code = self._exit_code(server.sidecar_pid)
            return f"sidecar exited{code}; see {server.work_dir}/sidecar.log"
        return None

    def _exit_code(self, pid: int | None) -> str:
        child = self._children.get(pid) if pid else None
        return f" with code {child.returncode}" if child and child.returncode is not None else ""

    def adopt(self, server: Server) -> bool:
        """Keeps a running tritonserver, with a new sidecar that reports to this daemon.

        The old sidecar may point at an address this daemon no longer listens on; a fresh one
        learns what is loaded from Triton's repository index, so nothing is reloaded.
        """
        if not _running(server.pid, server.work_dir):
            return False
        assert server.pid is not None
        self._watch_exit(server.pid)
        if server.sidecar_pid and _running(server.sidecar_pid, server.id):
            # It holds nothing the new one cannot read back from Triton.
            _signal_group(server.sidecar_pid, signal.SIGKILL)
        self._start_sidecar(server, Path(server.work_dir))
        return True

    revives_servers = True

    def restart_sidecar(self, server: Server) -> bool:
        """A dead sidecar is replaced while Triton serves on: the new one reads what is
        loaded from Triton's repository index, so nothing reloads (as at adoption)."""
        if not self._alive(server.pid, server.work_dir):
            return False
        if server.sidecar_pid:
            self._reap(server.sidecar_pid)
        self._start_sidecar(server, Path(server.work_dir))
        return True

    async def restart(self, server: Server) -> bool:
        """Kills what is left of a crashed server, then starts it again on new ports (the
        old ones may still be held by a dying process); its models are copied afresh, as
        a crash may have left them half-written. The logs are kept (appended to).

        A sidecar that outlived its Triton is kept: the daemon tells it the new address with
        its next assignment and it loads everything again at once, where a new sidecar
        process would first spend a few hundred milliseconds starting (docs/benchmarks.md)."""
        keep = bool(server.sidecar_pid) and self._alive(server.sidecar_pid, server.id)
        doomed = [(server.pid, server.work_dir)]
        if not keep:
            doomed.insert(0, (server.sidecar_pid, server.id))
        for pid, marker in doomed:
            if pid:
                _signal_group(pid, signal.SIGKILL)
                await self._wait_gone(pid, marker, grace=8.0)
        for pid in _pids_mentioning(server.work_dir):
            if not (keep and pid == server.sidecar_pid):
                _signal_group(pid, signal.SIGKILL)
        _clear_keeping_logs(Path(server.work_dir))
        server.http_port, server.grpc_port, server.metrics_port = free_ports(3)
        if keep:
            self._start_triton(server, Path(server.work_dir))
            log.info(
                "server %s: tritonserver pid %s beside sidecar pid %s",
                server.id,
                server.pid,
                server.sidecar_pid,
            )
        else:
            await self.start(server)
        return True

    def kill_children(self) -> list[int]:
        """After every server was stopped at shutdown: kills the process group of any child
        this backend started that still runs (one whose start a cancelled task began), so
        that none outlives the daemon. Returns their pids."""
        if self._spare is not None:
            self._spare.close()
        left = [pid for pid, child in self._children.items() if child.poll() is None]
        for pid in left:
            log.warning("process %d outlived its server's stop; killing its group", pid)
            self._reap(pid)
        return left

    def _reap(self, pid: int) -> None:
        _signal_group(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait()

    async def stop(self, server: Server) -> None:
        # Each process leads its own group: signalling the group also reaches the
        # Python-backend stubs that tritonserver started.
        for pid, marker in ((server.sidecar_pid, server.id), (server.pid, server.work_dir)):
            if pid and self._alive(pid, marker):
                _signal_group(pid, signal.SIGTERM)
        for pid, marker in ((server.sidecar_pid, server.id), (server.pid, server.work_dir)):
            if pid:
                await self._wait_gone(pid, marker, grace=8.0)
        # A daemon killed between starting a process and recording its pid leaves one we
        # only know by its command line, which names the server's directory.
        for pid in _pids_mentioning(server.work_dir):
            _signal_group(pid, signal.SIGKILL)
        shutil.rmtree(server.work_dir, ignore_errors=True)

    async def _wait_gone(self, pid: int, marker: str, *, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._alive(pid, marker):
            if loop.time() > deadline:
                log.warning("pid %d ignored SIGTERM for %.0fs; killing it", pid, grace)
                _signal_group(pid, signal.SIGKILL)
                deadline = loop.time() + grace
            await asyncio.sleep(0.02)
        # The group may still hold stubs whose leader is gone.
        _signal_group(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait()


def _clear_keeping_logs(work: Path) -> None:
    for entry in work.iterdir() if work.exists() else ():
        if entry.name.endswith(".log"):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
