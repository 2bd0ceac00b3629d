"""API tokens: made once, shown once, kept as a SHA-256 hash, checked on every call.

A token is `tms_` and 43 URL-safe characters (256 random bits), so a fast hash is enough to
keep it: nobody can guess one from its hash. Revoking or expiring a token takes effect on the
next call, as every call looks its hash up in memory.

A token seen before is not hashed again: the registry remembers, by secret, the record and
principal of each token it has verified. Every change to the tokens (create, replace, revoke)
empties that memory before it returns, so a revoked token fails on its very next call; expiry
is checked on every call against the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable

from tms_core.clock import Clock
from tms_core.domain import ApiToken
from tms_core.errors import AlreadyExists, InvalidArgument, TokenNotFound, Unauthenticated
from tms_core.identity.principal import Principal, Role, parse_role

TOKEN_PREFIX = "tms_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
MAX_TOKEN_LENGTH = 512


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token_name(name: str) -> None:
    if not TOKEN_NAME.match(name):
        raise InvalidArgument(
            "name",
            f"{name!r} is not a token name (letters, digits, '.', '_' and '-', at most 63, "
            "starting with a letter or digit)",
        )


class TokenRegistry:
    """Every token by hash, in memory; changes are written through `persist` first."""

    def __init__(
        self,
        tokens: Iterable[ApiToken],
        *,
        clock: Clock,
        persist: Callable[[ApiToken], Awaitable[None]],
    ) -> None:
        self._by_name = {t.name: t for t in tokens}
        self._by_hash = {t.hash: t for t in self._by_name.values()}
        self._clock = clock
        self._persist = persist
        # secret -> its record and principal, for tokens verified since the last change.
        self._verified: dict[str, tuple[ApiToken, Principal]] = {}

    def list(self) -> list[ApiToken]:
        return [self._by_name[name] for name in sorted(self._by_name)]

    def get(self, name: str) -> ApiToken | None:
        return self._by_name.get(name)

    def authenticate(self, secret: str) -> Principal:
        """The principal of a token, or Unauthenticated saying why not (never echoing it)."""
        known = self._verified.get(secret)
        if known is None:
            known = self._verify(secret)
        record, principal = known
        if record.expires_at is not None and record.expires_at <= self._clock.now():
            raise Unauthenticated(f"token {record.name!r} has expired")
        return principal

    def _verify(self, secret: str) -> tuple[ApiToken, Principal]:
        if len(secret) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("the token is not one this daemon issued")
        hashed = hash_token(secret)
        record = self._by_hash.get(hashed)
        # Found by its hash: only a 256-bit preimage could match a token it was not made from.
        if record is None or not hmac.compare_digest(record.hash, hashed):
            raise Unauthenticated("the token is not one this daemon issued")
        if record.revoked_at is not None:
            raise Unauthenticated(f"token {record.name!r} was revoked")
        known = (record, Principal(record.name, Role(record.role), record.tenant))
        # Only tokens that verified are remembered (at most one entry per live token), so
        # unknown secrets cannot grow it.
        self._verified[secret] = known
        return known

    async def create(
        self,
        name: str,
        role: str,
        *,
        tenant: str = "",
        expires_in_s: float | None = None,
        replace: bool = False,
    ) -> tuple[ApiToken, str]:
        """A new token: its record and the secret, which is not kept and never shown again."""
        check_token_name(name)
        try:
            parsed = parse_role(role)
        except ValueError as exc:
            raise InvalidArgument("role", str(exc)) from None
        if parsed is Role.USER and not tenant:
            raise InvalidArgument("tenant", "a user token needs a tenant (--tenant)")
        existing = self._by_name.get(name)
        if existing is not None and existing.revoked_at is None and not replace:
            raise AlreadyExists(f"token {name!r} already exists; revoke it first")
        if expires_in_s is not None and not expires_in_s > 0:
            raise InvalidArgument("expires", "must be a positive duration")
        now = self._clock.now()
        secret = new_secret()
        record = ApiToken(
            name=name,
            hash=hash_token(secret),
            role=parsed.value,
            tenant=tenant,
            created_at=now,
            expires_at=now + expires_in_s if expires_in_s is not None else None,
        )
        await self._persist(record)
        if existing is not None:
            self._by_hash.pop(existing.hash, None)
        self._by_name[name] = record
        self._by_hash[record.hash] = record
        # After the records change (no await between): a call verified while `persist` ran
        # saw the old ones.
        self._verified.clear()
        return record, secret

    async def revoke(self, name: str) -> ApiToken:
        record = self._by_name.get(name)
        if record is None:
            raise TokenNotFound(name)
        if record.revoked_at is None:
            revoked = ApiToken(**{**record.__dict__, "revoked_at": self._clock.now()})
            await self._persist(revoked)
            self._by_name[name] = revoked
            self._by_hash[revoked.hash] = revoked
            # Before the revocation is answered, and after the records change (a call verified
            # while `persist` ran saw the old one): the token's next call is refused.
            self._verified.clear()
            record = revoked
        return record
