"""The router's door: who is calling (API keys) and whether they may, now (rate limits)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragraph_client.errors import Unauthenticated

from .keys import KeyStore
from .limits import ANONYMOUS, Buckets, Limits, MemoryBuckets, RateLimited, RedisBuckets

if TYPE_CHECKING:
    from ..settings import RouterSettings

log = logging.getLogger("ragraph.router.access")

MISSING_KEY = "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"


@dataclass(frozen=True)
class Principal:
    key_id: str  # "anonymous" when auth is off
    name: str


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS, ANONYMOUS)


def presented_key(headers: Mapping[str, str]) -> str:
    """The key in ``authorization: Bearer <key>`` or ``x-api-key: <key>`` (lower-case header
    names); Unauthenticated when there is none or the authorization header is not Bearer."""
    auth = headers.get("authorization")
    if isinstance(auth, str) and auth.strip():
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    if isinstance(api_key, str) and api_key.strip():
        return api_key.strip()
    if isinstance(auth, str) and auth.strip():
        raise Unauthenticated("malformed authorization header: expected 'authorization: Bearer <key>'")
    raise Unauthenticated(MISSING_KEY)


class Gate:
    """API-key authentication plus per-key rate limits, as one object.

    ``enabled`` (auth on) when a key file or env-var hashes are configured; otherwise every
    caller is :data:`ANONYMOUS_PRINCIPAL`, and the default limits apply to it as one budget. No
    limits configured (no defaults, no per-key limits): ``admit``/``charge`` do nothing."""

    def __init__(self, keys: KeyStore | None, defaults: Limits | None = None, buckets: Buckets | None = None) -> None:
        self.keys = keys
        self.enabled = keys is not None
        self.defaults = defaults or Limits()
        self.buckets: Buckets = buckets if buckets is not None else MemoryBuckets()

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Gate:
        env_hashes = [h.strip() for h in (settings.api_keys or "").split(",") if h.strip()]
        keys = None
        if settings.api_keys_file or env_hashes:
            keys = KeyStore.load(settings.api_keys_file or None, env_hashes)
        defaults = Limits(settings.rate_limit_rps, settings.rate_limit_burst, settings.rate_limit_tokens_per_min)
        buckets: Buckets = RedisBuckets(settings.redis_url) if settings.redis_url else MemoryBuckets()
        return cls(keys, defaults, buckets)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller named by ``headers`` (lower-case names). Unauthenticated for a missing,
        malformed, unknown or revoked key; the message never contains the key."""
        if self.keys is None:
            return ANONYMOUS_PRINCIPAL
        record = self.keys.verify(presented_key(headers))
        return Principal(record.id, record.name)

    def limits_for(self, principal: Principal) -> Limits:
        """The principal's effective limits: its own (from the key file, re-read on change) over
        the router's defaults."""
        if self.keys is None:
            return self.defaults
        return self.keys.limits_for(principal.key_id).merged_over(self.defaults)

    async def admit(self, principal: Principal) -> None:
        """Take one request from the principal's request bucket, if its token bucket is not in
        debt; RateLimited (retry_after_s) otherwise, Unavailable if Redis is unreachable."""
        limits = self.limits_for(principal)
        if not limits.active:
            return
        try:
            await self.buckets.admit(principal.key_id, limits)
        except RateLimited as exc:
            log.debug("%s", exc.message)
            raise

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Charge the tokens a request generated (may put the bucket in debt)."""
        if tokens <= 0:
            return
        limits = self.limits_for(principal)
        if limits.tokens_per_min is None:
            return
        await self.buckets.charge(principal.key_id, limits, tokens)

    async def close(self) -> None:
        await self.buckets.close()


__all__ = ["ANONYMOUS_PRINCIPAL", "MISSING_KEY", "Gate", "Principal", "RateLimited", "presented_key"]
