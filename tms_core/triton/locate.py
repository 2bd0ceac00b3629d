"""Where the tritonserver binary and its backends are, and the environment it needs.

By default the binary is the one bundled in the `nvidia-pytriton` wheel (Triton 2.51 with the
Python backend). `--tritonserver PATH` or `TMS_TRITONSERVER` points at another build, for
example `/opt/tritonserver/bin/tritonserver` inside an NGC container.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tms_core.errors import TritonNotFound


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_directory: Path
    env: dict[str, str] = field(default_factory=dict)


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(binary: Path | None, backend_directory: Path | None, *, work_dir: Path) -> TritonInstall:
    """The Triton to run, or TritonNotFound saying what is missing and how to fix it."""
    env: dict[str, str] = {}
    # The Python-backend stub embeds the interpreter and finds its packages (numpy, the
    # models' own imports) through the first python on PATH: make that this environment's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    root = _wheel_root()
    wheel_binary = root / "tritonserver" / "bin" / "tritonserver" if root else None
    if binary is not None and wheel_binary is not None and wheel_binary.exists():
        # A link (or a second path) to the wheel's tritonserver needs the wheel's set-up:
        # its libraries and the Python-backend stub sit beside it, not where the link is.
        if binary.resolve() == wheel_binary.resolve() and backend_directory is None:
            wheel_install = locate(None, None, work_dir=work_dir)
            return TritonInstall(binary, wheel_install.backend_directory, wheel_install.env)
    if binary is None:
        root = _wheel_root()
        if root is None or not (root / "tritonserver" / "bin" / "tritonserver").exists():
            found = shutil.which("tritonserver")
            if found is None:
                raise TritonNotFound(
                    "no tritonserver found: install the nvidia-pytriton wheel "
                    "(pip install nvidia-pytriton==0.7.0), or set --tritonserver PATH / "
                    "TMS_TRITONSERVER to a tritonserver binary"
                )
            binary = Path(found)
        else:
            wheel_server = root / "tritonserver"
            libs = root.parent / "nvidia_pytriton.libs"
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in [str(libs), os.environ.get("LD_LIBRARY_PATH", "")] if p
            )
            return TritonInstall(
                binary=wheel_server / "bin" / "tritonserver",
                backend_directory=backend_directory
                or _wheel_backends(wheel_server, work_dir / "backends"),
                env=env,
            )
    if not binary.exists():
        raise TritonNotFound(f"tritonserver {binary} does not exist (from --tritonserver)")
    if not os.access(binary, os.X_OK):
        raise TritonNotFound(f"tritonserver {binary} is not executable")
    backends = backend_directory or binary.resolve().parent.parent / "backends"
    if not backends.is_dir():
        raise TritonNotFound(
            f"Triton backend directory {backends} does not exist; set local.backend_directory"
        )
    return TritonInstall(binary=binary, backend_directory=backends, env=env)


def _wheel_backends(wheel_server: Path, target: Path) -> Path:
    """A backend directory whose Python backend has the stub for this interpreter.

    The wheel ships one stub per Python version beside (not inside) its backend, and copying
    into site-packages would change an installed package, so link a private directory.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel_server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotFound(
            f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}"
        )
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = {p.name: p for p in (wheel_server / "backends" / "python").iterdir()}
    sources[stub.name] = stub
    for name, source in sources.items():
        if name == "__pycache__":
            continue
        link = python_dir / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return target
