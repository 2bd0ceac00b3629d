"""The committed gRPC stubs are what scripts/gen_protos.py makes of tms_core/api/tms.proto, and
the sidecar's Triton messages what it makes of sidecar/triton_repository.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gen_protos.py"
STUBS = ["tms_pb2.py", "tms_pb2.pyi", "tms_pb2_grpc.py"]
SIDECAR_STUBS = ["triton_repository_pb2.py", "triton_repository_pb2.pyi"]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protos")
    _load_script().generate(out)
    return out


@pytest.fixture(scope="module")
def generated(generated_root: Path) -> Path:
    return generated_root / "tms_core" / "api"


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


@pytest.mark.parametrize("name", SIDECAR_STUBS)
def test_committed_sidecar_messages_are_fresh(generated_root: Path, name: str) -> None:
    fresh = generated_root / "sidecar" / name
    assert fresh.exists(), f"gen_protos.py did not produce sidecar/{name}"
    committed = REPO_ROOT / "sidecar" / name
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"sidecar/{name} differs from what sidecar/triton_repository.proto generates: "
        "run `make protos` and commit the result"
    )
