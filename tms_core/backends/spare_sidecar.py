"""One sidecar started before its server exists, so that a new server's does not start cold.

A sidecar spends its first ~0.15 s of CPU importing (grpc, asyncio, protobuf, the repository
machinery), and a new server's first load waits for it: most of what a cold lease took over
starting tritonserver and loading by hand (docs/benchmarks.md, Time to READY). The local
backend keeps one `python -m sidecar --spare` waiting, imports done; a server's start hands
it, on its stdin, the command line it would have been started with. The next spare is
started by the reconciler's next pass in which no model loads (`Backend.refill`), as a
standby server is replaced: its start takes CPU that the new server's first load waits on.

The handed process rewrites its own command line to that one (its argument memory, as
`setproctitle` does; the spare is started with room for it), so everything that knows a
server's processes by command line (adoption after a daemon restart, the sweeps after a
crash, `ps`) sees an ordinary sidecar. The spare's own command line names its log, beside
the servers' directory rather than in it. A spare whose daemon is gone reads end of input
and exits.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ROOM = 2048
"""Bytes of command line the spare is started with, for the one it takes when handed."""
GIVE_UP_AFTER = 3
"""Spares that exit by themselves in a row (one that cannot take a command line, say) before
no more are started."""


class SpareSidecar:
    """The waiting sidecar process, if any (`local.spare_sidecar`)."""

    def __init__(
        self, python: str, log_path: Path, environment: Callable[[], dict[str, str]]
    ) -> None:
        self._python = python
        self._log_path = log_path
        self._environment = environment
        self._proc: subprocess.Popen[bytes] | None = None
        self._exits = 0
        """Spares that exited before they were handed a server, in a row."""

    def wanted(self) -> bool:
        """Whether a spare should be started: none waits, and they have not given up."""
        waiting = self._proc is not None and self._proc.poll() is None
        return not waiting and self._exits < GIVE_UP_AFTER

    def ensure(self) -> subprocess.Popen[bytes] | None:
        """Starts a spare unless one waits; returns the waiting one (None once spares have
        exited by themselves GIVE_UP_AFTER times in a row: servers' sidecars then start
        the usual way, and nothing is restarted every pass)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._exits += 1
            log.warning(
                "the spare sidecar exited with code %s; see %s%s",
                self._proc.returncode,
                self._log_path,
                "; no more spares" if self._exits >= GIVE_UP_AFTER else "",
            )
            self._proc = None
        if self._exits >= GIVE_UP_AFTER:
            return None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    self._python,
                    "-m",
                    "sidecar",
                    "--spare",
                    f"--log={self._log_path}",
                    "--room=" + " " * ROOM,
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self._environment(), "PYTHONUNBUFFERED": "1"},
                # Its own group, as every sidecar: stopping the server signals the group.
                start_new_session=True,
            )
        return self._proc

    def take(
        self, command: list[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes] | None:
        """Hands the waiting spare its server: `command` as a sidecar would be started with
        it, `env` added to its environment, its output to `log_path`. None when no spare
        waits or `command` does not fit (the caller starts a sidecar the usual way)."""
        proc = self._proc
        # One that exited is left for `ensure` to count and replace.
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return None
        if sum(len(part.encode()) + 1 for part in command) > ROOM:
            log.info("a sidecar command line longer than %d bytes: no spare for it", ROOM)
            return None  # it waits on, for the next server
        self._proc = None
        self._exits = 0
        handed = {"command": command, "env": env, "log": str(log_path)}
        try:
            proc.stdin.write(json.dumps(handed).encode() + b"\n")
            proc.stdin.close()
        except OSError as exc:  # it died just now
            log.warning("the spare sidecar could not be handed its server: %s", exc)
            proc.kill()
            proc.wait()
            return None
        return proc

    def close(self) -> None:
        """Ends the waiting spare (end of input; killed if it does not go at once)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
