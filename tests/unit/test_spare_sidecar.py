"""The spare sidecar's keeper (`tms_core/backends/spare_sidecar.py`) with processes that are
not sidecars, given to it as its "python": one that exits at once, as a spare that cannot
start would, and one that copies its input to its log, waiting on it as a spare does. The
handing over itself is tested end to end in tests/integration/test_spare_sidecar.py."""

from __future__ import annotations

from pathlib import Path

from tms_core.backends.spare_sidecar import GIVE_UP_AFTER, ROOM, SpareSidecar


def keeper(tmp_path: Path, script: str) -> SpareSidecar:
    """A keeper whose spares run `script` (sh), whatever arguments they are given."""
    program = tmp_path / "spare.sh"
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(0o755)
    return SpareSidecar(str(program), tmp_path / "spare.log", dict)


def test_spares_that_keep_exiting_are_given_up(tmp_path: Path) -> None:
    spares = keeper(tmp_path, "exit 1")
    for _ in range(GIVE_UP_AFTER):
        assert spares.wanted()
        proc = spares.ensure()
        assert proc is not None
        proc.wait(10)
    # The last one's exit is counted when it is next looked at: no more are started.
    assert spares.ensure() is None
    assert not spares.wanted()
    assert spares.take(["python", "-m", "sidecar"], {}, tmp_path / "log") is None


def test_a_waiting_spare_is_handed_once_and_a_command_too_long_leaves_it_waiting(
    tmp_path: Path,
) -> None:
    spares = keeper(tmp_path, "exec cat")
    spares.ensure()
    assert not spares.wanted()

    too_long = ["python", "-m", "sidecar", "--model-dir=" + "x" * ROOM]
    assert spares.take(too_long, {}, tmp_path / "log") is None
    assert not spares.wanted()  # still waiting, for a server whose command fits

    handed = spares.take(["python", "-m", "sidecar"], {"A": "1"}, tmp_path / "log")
    assert handed is not None
    # `cat` echoed the line it was handed into its log, and ended at the end of input.
    assert handed.wait(10) == 0
    assert '"command": ["python", "-m", "sidecar"]' in (tmp_path / "spare.log").read_text()
    assert spares.wanted()
    assert spares.take(["python", "-m", "sidecar"], {}, tmp_path / "log") is None


def test_close_ends_the_waiting_spare(tmp_path: Path) -> None:
    spares = keeper(tmp_path, "exec cat")
    proc = spares.ensure()
    assert proc is not None
    spares.close()
    assert proc.returncode == 0
    assert spares.wanted()


def test_a_spare_found_dead_when_handed_still_counts_towards_giving_up(tmp_path: Path) -> None:
    spares = keeper(tmp_path, "exit 1")
    for _ in range(GIVE_UP_AFTER):
        proc = spares.ensure()
        assert proc is not None
        proc.wait(10)
        # A server starting now gets no spare, and the dead one is not forgotten.
        assert spares.take(["python", "-m", "sidecar"], {}, tmp_path / "log") is None
    assert spares.ensure() is None
    assert not spares.wanted()
