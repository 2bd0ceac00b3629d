"""Sidecar credentials: one per server, good only for that server's Connect and Report.

A credential is `tmss_<server id>.<HMAC-SHA256 of the server id under the daemon's key>`, so
the daemon keeps no per-server secret: it checks a credential by computing it again. The key
is 32 random bytes in the state directory (readable by the daemon's user only); a daemon
restarted on the same state accepts the sidecars of the servers it adopts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from tms_core.errors import Unauthenticated
from tms_core.identity.principal import Principal, Role
from tms_core.identity.secret_files import read_secret, write_secret

SIDECAR_PREFIX = "tmss_"
KEY_FILE = "sidecar.key"


class SidecarKeys:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SidecarKeys:
        """The state directory's key, made on first start."""
        path = state_dir / KEY_FILE
        text = read_secret(path)
        if text is None:
            text = secrets.token_hex(32)
            write_secret(path, text)
        return cls(bytes.fromhex(text.strip()))

    def _mac(self, server_id: str) -> str:
        return hmac.new(self._key, server_id.encode(), hashlib.sha256).hexdigest()

    def credential(self, server_id: str) -> str:
        return f"{SIDECAR_PREFIX}{server_id}.{self._mac(server_id)}"

    def authenticate(self, secret: str) -> Principal:
        server_id, dot, mac = secret.removeprefix(SIDECAR_PREFIX).rpartition(".")
        if not dot or not server_id or not hmac.compare_digest(mac, self._mac(server_id)):
            raise Unauthenticated("the sidecar credential is not one this daemon issued")
        return Principal(f"sidecar:{server_id}", Role.SIDECAR, server_id=server_id)
