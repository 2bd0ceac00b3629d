"""What the sidecar reads of an ensemble, when it lets one load, and the bytecode it keeps
out of a model's directory (sidecar/ensemble.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.ensemble import StepsFailed, ensemble_steps, forbid_bytecode, steps_ready
from tms_core.api import tms_pb2 as pb


def config(tmp_path: Path, text: str) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.pbtxt").write_text(text)
    return model


def test_steps_are_read_from_an_ensemble_config(tmp_path: Path) -> None:
    model = config(
        tmp_path,
        """
        name: "pipe"  # platform: "python"
        platform:"ensemble"
        ensemble_scheduling { step [
          { model_name: "tokenize" model_version: -1 },
          { model_name : 'classify' },  # model_name: "commented_out"
          { model_name: "tokenize" }
        ] }
        """,
    )
    assert ensemble_steps(model) == {"tokenize", "classify"}


@pytest.mark.parametrize(
    "text",
    [
        'name: "m"\nbackend: "python"\n',
        '# platform: "ensemble"\nname: "m"\nbackend: "onnxruntime"\n',
        'name: "m"\nplatform: "ensemble_like"\n',
    ],
)
def test_other_models_have_no_steps(tmp_path: Path, text: str) -> None:
    assert ensemble_steps(config(tmp_path, text)) == frozenset()


def test_a_model_without_a_config_has_no_steps(tmp_path: Path) -> None:
    assert ensemble_steps(tmp_path) == frozenset()


@dataclass
class Status:
    state: pb.ModelState
    error: str = ""


STEPS = frozenset({"a", "b"})


def test_an_ensemble_waits_until_every_step_is_ready() -> None:
    status = {"a": Status(pb.MODEL_READY), "b": Status(pb.MODEL_LOADING)}
    assert not steps_ready("pipe", STEPS, {"pipe", "a", "b"}, status, {})
    status["b"] = Status(pb.MODEL_READY)
    assert steps_ready("pipe", STEPS, {"pipe", "a", "b"}, status, {})


def test_a_step_nobody_leased_is_named() -> None:
    with pytest.raises(StepsFailed, match=r"'pipe' calls 'a', 'b', not leased on this server"):
        steps_ready("pipe", STEPS, {"pipe"}, {}, {})


def test_a_failed_step_fails_the_ensemble_with_its_error() -> None:
    status = {"a": Status(pb.MODEL_FAILED, "weights missing"), "b": Status(pb.MODEL_READY)}
    with pytest.raises(StepsFailed, match="calls 'a', which failed: weights missing"):
        steps_ready("pipe", STEPS, {"pipe", "a", "b"}, status, {})


def test_ensembles_that_call_each_other_fail_rather_than_wait_forever() -> None:
    waiting = {"inner": frozenset({"pipe"})}
    with pytest.raises(StepsFailed, match="calls itself"):
        steps_ready("pipe", frozenset({"inner"}), {"pipe", "inner"}, {}, waiting)
    with pytest.raises(StepsFailed, match="calls itself"):
        steps_ready("pipe", frozenset({"pipe"}), {"pipe"}, {}, {})


def test_bytecode_is_kept_out_of_a_models_code_directories(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1" / "helpers").mkdir(parents=True)
    (model / "1" / "model.py").write_text("import helpers.maths\nVALUE = helpers.maths.VALUE\n")
    (model / "1" / "helpers" / "__init__.py").write_text("")
    (model / "1" / "helpers" / "maths.py").write_text("VALUE = 42\n")
    (model / "weights").mkdir()
    (model / "weights" / "w.bin").write_bytes(b"\0" * 8)
    (model / "config.pbtxt").write_text('name: "m"\n')

    assert forbid_bytecode(model) == 2
    assert forbid_bytecode(model) == 0  # already there
    assert not (model / "__pycache__").exists()
    assert not (model / "weights" / "__pycache__").exists()
    before = sorted(str(p.relative_to(model)) for p in model.rglob("*"))

    # An interpreter that would write bytecode (as Triton's Python stub does) imports the code.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    run = subprocess.run(
        [sys.executable, "-c", "import model; print(model.VALUE)"],
        cwd=model / "1",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "42"
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*")) == before


def test_a_pycache_directory_that_came_with_the_model_is_replaced(tmp_path: Path) -> None:
    # Copied from a developer's tree, it may hold another Python's bytecode; the stub would
    # write its own beside it.
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "model.cpython-312.pyc").write_bytes(b"\0")
    (tmp_path / "model.py").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__pycache__").mkdir()  # no code beside it: left as it is
    assert forbid_bytecode(tmp_path) == 1
    assert (tmp_path / "__pycache__").is_file()
    assert (tmp_path / "data" / "__pycache__").is_dir()
