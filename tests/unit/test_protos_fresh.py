"""The committed gRPC stubs are what scripts/gen_protos.py makes of tms_core/api/tms.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gen_protos.py"
STUBS = ["tms_pb2.py", "tms_pb2.pyi", "tms_pb2_grpc.py"]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protos")
    _load_script().generate(out)
    return out / "tms_core" / "api"


@pytest.mark.parametrize("name", STUBS)
def test_committed_stub_is_fresh(generated: Path, name: str) -> None:
    fresh = generated / name
    assert fresh.exists(), f"gen_protos.py did not produce {name}"
    committed = REPO_ROOT / "tms_core" / "api" / name
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"tms_core/api/{name} differs from what tms_core/api/tms.proto generates: "
        "run `make protos` and commit the result"
    )


def test_generation_writes_only_the_stubs(generated: Path) -> None:
    assert sorted(p.name for p in generated.iterdir()) == sorted(STUBS)
