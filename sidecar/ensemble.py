"""The models an ensemble calls, read from its `config.pbtxt`, so the sidecar loads them first.

Triton asked to load an ensemble while one of its steps is still loading loads that step a
second time (two stubs, twice the CPU, and the ensemble READY only after both); asked while a
step is absent from the repository, it fails. So an ensemble's load waits for its steps.
Triton also looks again at every step when it loads an ensemble, and loads a second time any
whose files changed since its load (by modification or change time, so the change cannot be
hidden afterwards). A Python-backend step's files always have: its stub writes the model's
bytecode into a `__pycache__` beside its code as it imports it, ignoring
PYTHONDONTWRITEBYTECODE. So before a model's first load the sidecar puts an empty *file* named
`__pycache__` wherever the model has Python code (`forbid_bytecode`): the import then skips
the write, as Python does wherever it cannot write (root included), and the model's files
stay as Triton saw them. Nothing is lost: a server's copy of a model is removed at its unload.

Only the two fields that say so are read, with a pattern rather than a protobuf parser: the
sidecar does not carry Triton's model-configuration schema, and Triton itself reports every
other fault in the file when it loads it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol

from tms_core.api import tms_pb2 as pb

_COMMENT = re.compile(r"#[^\n]*")
_ENSEMBLE = re.compile(r"""\bplatform\s*:\s*["']ensemble["']""")
_STEP = re.compile(r"""\bmodel_name\s*:\s*["']([^"']+)["']""")


def ensemble_steps(model_dir: Path) -> frozenset[str]:
    """The model names an ensemble's steps call; empty for any other model, and for one
    without a readable `config.pbtxt` (Triton says what is wrong with it at load)."""
    try:
        text = (model_dir / "config.pbtxt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    text = _COMMENT.sub("", text)
    if not _ENSEMBLE.search(text):
        return frozenset()
    return frozenset(_STEP.findall(text))


class StepsFailed(Exception):
    """The ensemble cannot load: a step is not leased on the server, failed, or calls it back."""


class _Status(Protocol):
    @property
    def state(self) -> pb.ModelState: ...
    @property
    def error(self) -> str: ...


def steps_ready(
    name: str,
    steps: frozenset[str],
    leased: Collection[str],
    status: Mapping[str, _Status],
    waiting: Mapping[str, frozenset[str]],
) -> bool:
    """Whether every step of the ensemble `name` is READY (False: wait for the next change).

    `leased` are the models assigned to the server, `status` what the sidecar knows of each,
    and `waiting` the ensembles waiting for their steps, a cycle among which would wait
    forever. Raises StepsFailed saying why the ensemble cannot load.
    """
    missing = sorted(steps - set(leased))
    if missing:
        raise StepsFailed(
            f"ensemble {name!r} calls {', '.join(map(repr, missing))}, not leased on this "
            "server: add each step to the lease as a model of its own"
        )
    for step in sorted(steps):
        current = status.get(step)
        if current is not None and current.state == pb.MODEL_FAILED:
            raise StepsFailed(f"ensemble {name!r} calls {step!r}, which failed: {current.error}")
    if _calls_back(name, steps, waiting):
        raise StepsFailed(f"ensemble {name!r} calls itself through {', '.join(sorted(steps))}")
    return all(
        (current := status.get(step)) is not None and current.state == pb.MODEL_READY
        for step in steps
    )


def _calls_back(name: str, steps: frozenset[str], waiting: Mapping[str, frozenset[str]]) -> bool:
    seen: set[str] = set()
    todo = list(steps)
    while todo:
        step = todo.pop()
        if step == name:
            return True
        if step not in seen:
            seen.add(step)
            todo.extend(waiting.get(step, ()))
    return False


def forbid_bytecode(model_dir: Path) -> int:
    """Puts an empty file named `__pycache__` in each directory of `model_dir` (the server's
    own copy of a model) that holds Python code. A `__pycache__` directory that came with the
    model is removed first: it may hold another Python's bytecode, beside which the stub would
    write its own. Returns how many it put."""
    put = 0
    for folder, dirs, files in os.walk(model_dir):
        if "__pycache__" in files or not any(name.endswith(".py") for name in files):
            continue
        cache = Path(folder) / "__pycache__"
        try:
            if "__pycache__" in dirs:
                dirs.remove("__pycache__")
                shutil.rmtree(cache)
            cache.touch(exist_ok=False)
            put += 1
        except OSError:
            continue  # read-only or raced: the model loads as before
    return put
