"""The activator's token on Kubernetes: made by the daemon, kept in a Secret only.

The activator (manifests/base/activator.yaml) calls `LeaseService.Wake` with the token in the
Secret `kubernetes.activator_token_secret`. At start the daemon makes sure that Secret holds a
token with the `activator` role that still verifies; when it is missing, or holds a token that
was revoked, expired, is unknown to this state or has another role, the daemon makes a new
`activator` token (replacing the old record of that name) and writes its secret into the
Secret. The secret goes nowhere else: the state keeps its hash, the log only that it was made.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tms_core.errors import TmsError
from tms_core.identity.principal import Role
from tms_core.identity.tokens import TokenRegistry

ACTIVATOR_TOKEN = "activator"
"""The name of the token the daemon makes (`tms token list` shows it)."""

log = logging.getLogger(__name__)


async def ensure_activator_token(
    registry: TokenRegistry,
    read: Callable[[], Awaitable[str | None]],
    write: Callable[[str], Awaitable[None]],
    *,
    where: str,
) -> bool:
    """Makes sure the Secret read by `read` (its token, None when missing) holds a working
    activator token, writing a new one with `write` if not. True when a token was made."""
    held = await read()
    if held:
        try:
            principal = registry.authenticate(held)
        except TmsError as exc:
            log.info("%s holds a token that no longer works (%s): making a new one", where, exc)
        else:
            if principal.role is Role.ACTIVATOR:
                return False
            log.warning(
                "%s holds token %r of role %s: replacing it with one that may only wake leases "
                "(revoke %r if nothing else uses it)",
                where,
                principal.name,
                principal.role.value,
                principal.name,
            )
    _, secret = await registry.create(ACTIVATOR_TOKEN, Role.ACTIVATOR.value, replace=True)
    await write(secret)
    log.info("activator token %r made and written to %s", ACTIVATOR_TOKEN, where)
    return True
