"""Authentication: from a call's `authorization` metadata to a principal, or why not."""

from __future__ import annotations

from collections.abc import Sequence

from tms_core.errors import Unauthenticated
from tms_core.identity.principal import Principal, Role
from tms_core.identity.sidecar_keys import SIDECAR_PREFIX, SidecarKeys
from tms_core.identity.tokens import TokenRegistry

# Every caller, when `identity.tokens` is off: the daemon trusts its network.
TRUSTED = Principal("unchecked", Role.ADMIN)
NO_TOKEN = (
    "no API token: pass --token, set TMS_TOKEN or save one with the target "
    "(on the daemon's own machine its user needs none)"
)


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, secret = text.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("the authorization metadata is not `Bearer TOKEN`")
            return secret.strip()
    return None


class Authority:
    def __init__(
        self, registry: TokenRegistry, sidecars: SidecarKeys, *, tokens_required: bool = True
    ) -> None:
        self.registry = registry
        self.sidecars = sidecars
        self.tokens_required = tokens_required

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        secret = bearer(metadata)
        if secret is not None and secret.startswith(SIDECAR_PREFIX):
            # Sidecar credentials are checked even when API tokens are not.
            return self.sidecars.authenticate(secret)
        if not self.tokens_required:
            return TRUSTED
        if secret is None:
            raise Unauthenticated(NO_TOKEN)
        return self.registry.authenticate(secret)
