"""The fault suite: random SIGKILLs of `tritonserver`, sidecars, the router and the daemon
under acquire/renew/release/name traffic, then every invariant checked (harness.py).

The seed is printed; `TMS_FAULT_SEED=<seed> pytest tests/faults` replays its faults and the
clients' choices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import processes_under
from tests.faults.harness import SEED_ENV, FaultRun, seed_from_env

pytestmark = pytest.mark.triton


@pytest.fixture
def fault_run(tmp_path: Path) -> Iterator[FaultRun]:
    seed = seed_from_env()
    print(f"fault run seed {seed} (replay: {SEED_ENV}={seed})")
    run = FaultRun(tmp_path / "run", seed, log=print)
    try:
        yield run
    finally:
        left = run.close()
    assert left == [], f"processes left running: {left}"


@pytest.mark.timeout(150)
def test_leases_survive_random_process_kills(fault_run: FaultRun, tmp_path: Path) -> None:
    outcome = fault_run.run()
    violations = fault_run.check()
    print(outcome.line())
    assert violations == [], f"seed {fault_run.seed}: {violations}"
    assert outcome.leases_lost == 0
    assert sum(outcome.faults.values()) == len(fault_run.plan)
    # Every kind of process was killed, and the clients got work done between the faults.
    assert set(outcome.faults) == {"tritonserver", "sidecar", "router", "daemon"}
    assert outcome.recoveries and outcome.operations - outcome.refused >= 10
    # A graceful stop of the last daemon leaves nothing behind, whatever was killed before.
    assert fault_run.close() == []
    assert processes_under(tmp_path) == []
