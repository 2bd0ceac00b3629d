"""Regenerates the committed gRPC stubs from tms_core/api/tms.proto, and the sidecar's
messages of Triton's API from sidecar/triton_repository.proto.

Run with `make protos`; tests/unit/test_protos_fresh.py fails when the committed stubs differ
from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    # Generated with the import path tms_core/api so the _grpc module imports its sibling by
    # package path, which keeps the stubs importable from anywhere.
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / "tms_core" / "api" / "tms.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Messages only: the sidecar names Triton's methods itself (sidecar/triton_grpc.py).
    sidecar = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(ROOT / "sidecar" / "triton_repository.proto"),
    ]
    if protoc.main(sidecar) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
