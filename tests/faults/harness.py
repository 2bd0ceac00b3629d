"""The fault run, shared by `tests/faults/` and `benchmarks/faults.py`.

With a real daemon and real Triton, client threads acquire (each lease under a name of its
own), renew, look up by name and release, while an injector SIGKILLs, one at a time,
`tritonserver`, sidecars, the router and the daemon (which it starts again on the same state
at once). The faults' kinds and pauses and every client's choices come from one seed, so a
failure replays with `TMS_FAULT_SEED`; the threads' interleaving is the machine's.

Afterwards `FaultRun.check` returns every broken invariant (empty: all held): every lease a
client holds is READY and answers at its lease and name addresses, every lease it released
is RELEASED, no lease was lost or duplicated (the daemon's leases against the clients' own
record), no process is left over (one router, one `tritonserver` and one sidecar per server
with leases, nothing else under the state directory), and the state file passes SQLite's
`integrity_check`.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.conftest import Daemon, processes_under, wait_for
from tests.integration.helpers import add_sub_grpc, add_sub_http, example
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient
from tms_core.lease_request import LeaseOptions

SEED_ENV = "TMS_FAULT_SEED"
KINDS = ("tritonserver", "sidecar", "router", "daemon")
ENDED = (pb.LEASE_RELEASED, pb.LEASE_EXPIRED, pb.LEASE_FAILED)
# What a client may be told while the daemon is down or restarting; anything else is a fault.
TOLERATED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    None,
}
CONFIG = (
    "servers:\n"
    "  max_restarts: 100\n"  # the run crashes servers on purpose; none is to be given up
    "  restart_backoff: 0.1s\n"
    "  idle_grace: 2s\n"
    "lease:\n"
    "  default_duration: 10m\n"
)


def seed_from_env() -> int:
    """`TMS_FAULT_SEED` if set (to replay a run), else a fresh random seed."""
    value = os.environ.get(SEED_ENV, "")
    return int(value) if value else random.SystemRandom().randrange(1 << 31)


@dataclass
class Outcome:
    seed: int
    operations: int = 0
    refused: int = 0
    """Operations the daemon could not answer (it was down or restarting)."""
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    """Seconds from a `tritonserver` SIGKILL to its leases READY again."""
    leases_lost: int = 0
    leases: int = 0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        p50 = statistics.median(self.recoveries) if self.recoveries else 0.0
        return (
            f"seed={self.seed} operations={self.operations} refused={self.refused} "
            f"faults={sum(self.faults.values())} "
            + " ".join(f"{kind}={self.faults[kind]}" for kind in KINDS)
            + f" leases={self.leases} leases_lost={self.leases_lost} "
            f"recoveries={len(self.recoveries)} recovery_p50_s={p50:.3f}"
        )


class _Client(threading.Thread):
    """One user of the daemon, keeping its own record of what it acquired and released."""

    def __init__(self, run: FaultRun, index: int, rng: random.Random) -> None:
        super().__init__(name=f"fault-client-{index}", daemon=True)
        self.run_ = run
        self.index = index
        self.rng = rng
        self.held: dict[str, str] = {}  # lease id -> name
        self.released: set[str] = set()
        self.to_release: set[str] = set()
        self.unconfirmed: set[str] = set()  # names whose acquire's outcome was not seen
        self.operations = 0
        self.refused = 0
        self.refusals: Counter[str] = Counter()
        self.problems: list[str] = []
        self._client: TmsClient | None = None
        self._made = 0

    def client(self) -> TmsClient:
        if self._client is None:
            self._client = TmsClient(self.run_.target)
        return self._client

    def _refused(self, exc: ClientError) -> None:
        if exc.code not in TOLERATED:
            self.problems.append(f"client {self.index}: {exc.code}: {exc}")
        self.refused += 1
        self.refusals[exc.code.name if exc.code else str(exc)[:60]] += 1
        # A fresh channel reconnects at once; a broken one waits out gRPC's backoff.
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self) -> None:
        while not self.run_.stopping.is_set():
            self.operations += 1
            try:
                self._one()
            except ClientError as exc:
                self._refused(exc)
            time.sleep(self.rng.uniform(0.05, 0.2))  # a user's pace, not a wait for anything

    def _one(self) -> None:
        roll = self.rng.random()
        if self.to_release:
            self._release(min(self.to_release))
        elif len(self.held) < self.run_.per_client and roll < 0.5:
            self._acquire()
        elif self.held and roll < 0.7:
            self._release(self.rng.choice(sorted(self.held)))
        elif self.held:
            lease_id = self.rng.choice(sorted(self.held))
            name = self.held[lease_id]
            if roll < 0.85:
                found = self.client().renew(name)
            else:
                found = self.client().status(name)
            if found.id != lease_id:
                self.problems.append(f"name {name} is lease {found.id}, not {lease_id}")
        else:
            self.client().list_leases()

    def _acquire(self) -> None:
        self._made += 1
        name = f"c{self.index}-{self._made}"
        self.unconfirmed.add(name)
        lease_id = ""
        for lease in self.client().acquire([example("add_sub")], LeaseOptions(name=name)):
            if not lease_id:
                lease_id = lease.id
                self.held[lease_id] = name
                self.unconfirmed.discard(name)
            if lease.state == pb.LEASE_READY:
                return
            if lease.state in ENDED:
                self.problems.append(
                    f"acquire {name}: {pb.LeaseState.Name(lease.state)}: {lease.reason}"
                )
                return

    def _release(self, lease_id: str) -> None:
        self.to_release.add(lease_id)
        self.held.pop(lease_id, None)
        self.client().release(lease_id, wait=False)
        self.to_release.discard(lease_id)
        self.released.add(lease_id)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class FaultRun:
    """A daemon on `work`, the clients, and the injector; `run` then `check`, then `close`."""

    def __init__(
        self,
        work: Path,
        seed: int,
        *,
        faults: int = 8,
        clients: int = 3,
        per_client: int = 2,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.work = work
        self.seed = seed
        self.per_client = per_client
        self.log = log
        rng = random.Random(seed)
        # Every kind at least once, then random ones; each after a random pause.
        kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(max(faults - len(KINDS), 0))]
        rng.shuffle(kinds)
        self.plan = [(kind, rng.uniform(0.3, 2.0), rng.random()) for kind in kinds]
        self.clients = [_Client(self, i, random.Random(rng.random())) for i in range(clients)]
        self.stopping = threading.Event()
        self.outcome = Outcome(seed)
        config = work / "tms.yaml"
        work.mkdir(parents=True, exist_ok=True)
        config.write_text(CONFIG)
        self._config = f"--config={config}"
        self.daemon = Daemon(work / "state", self._config)
        self.daemons = [self.daemon]
        self.target = self.daemon.target

    # ------------------------------------------------------------------ the run

    def run(self) -> Outcome:
        self.daemon.start()
        for client in self.clients:
            client.start()
        wait_for(lambda: self._ready_servers() != [], timeout=60, what="a first READY lease")
        for kind, pause, pick in self.plan:
            time.sleep(pause)  # the plan's spacing between faults, not a wait for a result
            self._inject(kind, pick)
        self.stopping.set()
        for client in self.clients:
            client.join(timeout=120)
        return self.outcome

    def _ready_servers(self) -> list[str]:
        try:
            leases = self.daemon.client.list_leases()
        except ClientError:
            return []
        return sorted({lease.server_id for lease in leases if lease.state == pb.LEASE_READY})

    def _inject(self, kind: str, pick: float) -> None:
        if kind in ("tritonserver", "sidecar"):
            # The clients may have released every lease just now; one acquires again soon.
            wait_for(lambda: self._ready_servers() != [], timeout=60, what="a READY lease")
        servers = self._ready_servers()
        self.outcome.faults[kind] += 1
        if kind == "daemon":
            self.log("fault: SIGKILL the daemon, start it again")
            self.daemon.stop(signal.SIGKILL)
            self.daemon.client.close()
            self.daemon = Daemon(self.work / "state", self._config, target=self.target)
            self.daemons.append(self.daemon)
            self.daemon.start()
            return
        if kind == "router":
            [pid] = self._processes("router")
            restarts = self._router_restarts()
            self.log(f"fault: SIGKILL the router (pid {pid})")
            os.kill(pid, signal.SIGKILL)
            # The event comes once the new router serves the last routes.
            wait_for(lambda: self._router_restarts() > restarts, timeout=30, what="a new router")
            return
        server = servers[int(pick * len(servers))]
        pids = self._processes(kind, server)
        if not pids:  # it is being restarted by an earlier fault's revival
            return
        leases = self._leases_on(server)
        self.log(f"fault: SIGKILL {kind} of server {server} (pid {pids[0]})")
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        if kind == "tritonserver":
            wait_for(
                lambda: self._revived(leases),
                timeout=60,
                what=f"server {server}'s leases READY again after its tritonserver died",
            )
            elapsed = time.monotonic() - killed_at
            # A recovery only if a lease came back (the clients may have released them all).
            if any(self.daemon.client.status(i).state == pb.LEASE_READY for i in leases):
                self.outcome.recoveries.append(elapsed)

    def _router_restarts(self) -> int:
        events = self.daemon.client.watch(follow=False)
        return sum(1 for e in events if e.kind == "router" and e.state == "RESTARTED")

    def _leases_on(self, server: str) -> dict[str, str]:
        """READY leases on `server`: id -> its Triton's HTTP endpoint."""
        return {
            lease.id: lease.endpoints.servers[0].http
            for lease in self.daemon.client.list_leases()
            if lease.server_id == server and lease.state == pb.LEASE_READY
        }

    def _revived(self, leases: dict[str, str]) -> bool:
        """Each lease READY on a restarted Triton (new ports), or released meanwhile."""
        for lease_id, endpoint in leases.items():
            lease = self.daemon.client.status(lease_id)
            if lease.state in ENDED or lease.state == pb.LEASE_RELEASING:
                continue
            if lease.state != pb.LEASE_READY or lease.endpoints.servers[0].http == endpoint:
                return False
        return True

    def _processes(self, kind: str, server: str = "") -> list[int]:
        """Live pids of the router, the spare sidecar (`local.spare_sidecar`), or a server's
        (all servers': "") tritonserver or sidecar, by command line."""
        state = self.work / "state"
        found = []
        for pid in processes_under(self.work):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if stat.split(") ", 1)[1].startswith("Z"):
                continue
            if kind == "router" and "tms_core.router" in argv:
                found.append(pid)
            elif kind == "spare" and "--spare" in argv:
                found.append(pid)
            elif kind == "tritonserver" and any(
                a.startswith(f"--model-repository={state}/servers/{server}") for a in argv
            ):
                found.append(pid)
            elif (
                kind == "sidecar"
                and "sidecar" in argv
                and any(a.startswith(f"--server-id={server}") for a in argv)
            ):
                found.append(pid)
        return sorted(found)

    # ------------------------------------------------------------------ afterwards

    def check(self) -> list[str]:
        """Settles what the clients left undone, then returns every broken invariant."""
        client = self.daemon.client
        violations = [p for c in self.clients for p in c.problems]
        held: dict[str, str] = {}
        released: set[str] = set()
        unconfirmed: set[str] = set()
        for c in self.clients:
            for lease_id in sorted(c.to_release):
                client.release(lease_id, wait=False)  # its first try met a daemon going down
                c.released.add(lease_id)
            held.update(c.held)
            released |= c.released
            unconfirmed |= c.unconfirmed
            self.outcome.operations += c.operations
            self.outcome.refused += c.refused
        every = client.list_leases(include_ended=True)
        # A lease shows the name pointing at it (or waiting to): none once it ended before
        # READY (released while loading), so ids identify leases and names only the leases
        # whose acquire's answer was lost.
        by_name = Counter(lease.name for lease in every if lease.name)
        recorded = set(held) | released
        for lease in every:
            if by_name[lease.name] > 1:
                violations.append(f"lease name {lease.name} acquired {by_name[lease.name]} times")
            if lease.id in recorded:
                continue
            if lease.name in unconfirmed and lease.state not in ENDED:
                # Acquired just before the daemon died: its holder never saw the id.
                held[lease.id] = lease.name
            else:
                violations.append(f"lease {lease.id} ({lease.name!r}): no client asked for it")
        known = {lease.id for lease in every}
        lost = sorted((set(held) | released) - known)
        self.outcome.leases_lost = len(lost)
        self.outcome.leases = len(every)
        violations += [f"lease {lease_id} lost" for lease_id in lost]
        for lease_id in sorted(set(held) - set(lost)):
            wait_for(
                lambda lease_id=lease_id: client.status(lease_id).state == pb.LEASE_READY,
                timeout=60,
                what=f"lease {lease_id} (held) READY",
            )
            violations += self._answers(client.status(lease_id))
        for lease_id in sorted(released - set(lost)):
            wait_for(
                lambda lease_id=lease_id: client.status(lease_id).state == pb.LEASE_RELEASED,
                timeout=30,
                what=f"lease {lease_id} (released) RELEASED",
            )
        violations += self._orphans(client, held)
        violations += self._integrity()
        self.outcome.violations = violations
        return violations

    def _answers(self, lease: pb.Lease) -> list[str]:
        names = {n.name: n for n in self.daemon.client.list_names()}
        addresses = [(add_sub_http, lease.endpoints.http), (add_sub_grpc, lease.endpoints.grpc)]
        if lease.name in names:
            addresses.append((add_sub_http, names[lease.name].endpoints.http))
        else:
            return [f"lease {lease.id}: its name {lease.name} is gone"]
        import numpy as np

        a = np.array([1, 2, 3, 4], dtype=np.float32)
        problems = []
        for call, address in addresses:
            try:
                total, _ = call(address, a, a)
                assert np.allclose(total, a + a)
            except Exception as exc:  # any failure to answer is a violation
                problems.append(f"lease {lease.id} does not answer at {address}: {exc!r}")
        return problems

    def _orphans(self, client: TmsClient, held: dict[str, str]) -> list[str]:
        servers = {client.status(lease_id).server_id for lease_id in held}

        def settled() -> bool:
            running = {
                kind: self._processes(kind) for kind in ("tritonserver", "sidecar", "router")
            }
            return (
                len(running["router"]) == 1
                and all(len(self._processes(k, s)) == 1 for s in servers for k in KINDS[:2])
                and len(running["tritonserver"]) == len(running["sidecar"]) == len(servers)
                # A killed daemon's spare reads end of input and goes; the live one's waits.
                and len(self._processes("spare")) <= 1
            )

        # Servers emptied by releases stop after the idle grace; killed ones are reaped.
        wait_for(settled, timeout=30, what="one router and one tritonserver and sidecar each")
        expected = set(self._processes("router")) | set(self._processes("spare"))
        for server in servers:
            for kind in KINDS[:2]:
                expected |= set(self._processes(kind, server))
        daemon = {self.daemon.proc.pid} if self.daemon.proc else set()
        extra = [pid for pid in processes_under(self.work) if pid not in expected | daemon]
        # Python-backend stubs are tritonserver's children, in its process group.
        extra = [pid for pid in extra if os.getpgid(pid) not in expected]
        return [f"process {pid} left over" for pid in extra]

    def _integrity(self) -> list[str]:
        with sqlite3.connect(f"file:{self.daemon.state}?mode=ro", uri=True) as db:
            [(result,)] = db.execute("PRAGMA integrity_check").fetchall()
        return [] if result == "ok" else [f"integrity_check: {result}"]

    def close(self) -> list[str]:
        """Stops the clients and every daemon (gracefully: it stops its servers), then kills
        whatever is left under the run's directory; returns what that was (a failed run's
        daemon may have died without stopping its servers)."""
        self.stopping.set()
        for client in self.clients:
            client.close()
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
            daemon.client.close()
        left = []
        for pid in processes_under(self.work):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                os.killpg(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
            left.append(f"{pid}: {argv.decode(errors='replace')[:160]}")
        return left
