"""The one-machine start: the daemon's own admin token, found by clients on the same machine.

On start the daemon makes sure `<state dir>/admin.token` (mode 0600) holds a working admin
token, and leaves a pointer to that file under `$XDG_STATE_HOME/tms/local-daemons/<port>`.
A client given no token, talking to a loopback address, follows the pointer for the port and
reads the token, so `tms lease list`, the console and the notebook just work for the user who
started the daemon, while other users of the machine (who cannot read the file) cannot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tms_core.defaults import default_state_dir
from tms_core.identity.principal import Role
from tms_core.identity.secret_files import read_secret, write_secret

if TYPE_CHECKING:
    # Every client reads this module (`local_token`); the registry is the daemon's.
    from tms_core.identity.tokens import TokenRegistry

ADMIN_TOKEN_FILE = "admin.token"
LOCAL_ADMIN = "local-admin"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1", "0.0.0.0", "[::]", "")

log = logging.getLogger(__name__)


def _pointers() -> Path:
    return default_state_dir() / "local-daemons"


def _port(address: str) -> str | None:
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or (host not in LOOPBACK and not host.startswith("127.")):
        return None
    return port


async def ensure_admin_token(registry: TokenRegistry, state_dir: Path) -> Path:
    """The admin token file of this state, with a token that works (made again if not)."""
    path = state_dir / ADMIN_TOKEN_FILE
    secret = read_secret(path)
    if secret is not None:
        try:
            if registry.authenticate(secret).role is Role.ADMIN:
                return path
        except Exception:
            pass
    _, secret = await registry.create(LOCAL_ADMIN, Role.ADMIN.value, replace=True)
    write_secret(path, secret)
    log.info("local admin token written to %s (readable by this user only)", path)
    return path


def register(listen: str, token_file: Path) -> Path | None:
    """Points clients of this machine at `token_file` for the daemon listening at `listen`."""
    port = _port(listen)
    if port is None:
        return None
    pointer = _pointers() / port
    try:
        write_secret(pointer, str(token_file.resolve()))
    except OSError as exc:
        log.warning("cannot write %s (%s): local clients will need --token", pointer, exc)
        return None
    return pointer


def unregister(pointer: Path | None, token_file: Path) -> None:
    if pointer is not None and read_secret(pointer) == str(token_file.resolve()):
        pointer.unlink(missing_ok=True)


def local_token(target: str) -> str | None:
    """The admin token of the daemon at `target`, when it runs on this machine for this
    user; None otherwise."""
    port = _port(target)
    if port is None:
        return None
    path = read_secret(_pointers() / port)
    return read_secret(Path(path)) if path else None
