"""Per-key token buckets: requests/s and generated tokens/minute.

Two buckets per key:

* **requests**: capacity ``burst`` (default ``2 x rps``, at least 1), refilled at ``rps`` per
  second; each admitted request takes 1.
* **tokens**: capacity ``tokens_per_min``, refilled at ``tokens_per_min / 60`` per second. A
  request is admitted only while this bucket holds at least one token (is not in debt); the
  tokens a request generated are charged after the fact (:meth:`Buckets.charge`) and may push
  the level below zero, which then blocks that key until the refill pays the debt back.

A refused request consumes nothing. :class:`MemoryBuckets` keeps the buckets in this process;
:class:`RedisBuckets` keeps them in Redis (one atomic Lua script per operation) so that every
router replica draws on one budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from ragraph_client.errors import ResourceExhausted, Unavailable

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Limits:
    """Effective limits of one key (None: that limit is off)."""

    rps: float | None = None
    burst: int | None = None
    tokens_per_min: int | None = None

    @property
    def active(self) -> bool:
        return self.rps is not None or self.tokens_per_min is not None

    @property
    def request_capacity(self) -> float:
        if self.rps is None:
            return 0.0
        return float(max(1.0, self.burst if self.burst is not None else 2 * self.rps))

    @property
    def token_rate(self) -> float:
        return 0.0 if self.tokens_per_min is None else self.tokens_per_min / 60.0

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("rps", self.rps), ("burst", self.burst), ("tokens_per_min", self.tokens_per_min))
            if v is not None
        }

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        """From a key file's ``limits`` object (each field optional, each > 0)."""
        data = data or {}
        if not isinstance(data, dict):
            raise ValueError("limits must be an object")
        rps, burst, tpm = data.get("rps"), data.get("burst"), data.get("tokens_per_min")
        return cls(
            rps=None if rps is None else _positive(float(rps), "rps"),
            burst=None if burst is None else int(_positive(int(burst), "burst")),
            tokens_per_min=None if tpm is None else int(_positive(int(tpm), "tokens_per_min")),
        )

    def merged_over(self, defaults: Limits) -> Limits:
        """These limits, each unset field taken from ``defaults``. A key that sets its own rps
        but no burst gets 2 x its rps (not the default burst, which was sized for the default
        rps)."""
        rps: float | None
        burst: int | None
        if self.rps is not None:
            rps, burst = self.rps, self.burst
        else:
            rps, burst = defaults.rps, self.burst if self.burst is not None else defaults.burst
        tpm = self.tokens_per_min if self.tokens_per_min is not None else defaults.tokens_per_min
        return Limits(rps, burst, tpm)


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _num(value: float) -> str:
    return f"{value:g}"


class RateLimited(ResourceExhausted):
    """A key is over one of its limits. ``retry_after_s``: when the refused request would be
    admitted (if nothing else draws on the bucket meanwhile); ``limit``: "requests" or "tokens"."""

    def __init__(self, key_id: str, limit: str, limits: Limits, retry_after_s: float) -> None:
        who = "anonymous callers are" if key_id == ANONYMOUS else f"key {key_id} is"
        if limit == "requests":
            what = f"{_num(limits.rps or 0)} requests/s (burst {_num(limits.request_capacity)})"
        else:
            what = f"{_num(limits.tokens_per_min or 0)} generated tokens/min"
        retry_after_s = max(0.0, float(retry_after_s))
        super().__init__(f"rate limit: {who} over {what}; retry after {retry_after_s:.2f} s")
        self.key_id = key_id
        self.limit = limit
        self.retry_after_s = retry_after_s


class Buckets(Protocol):
    async def admit(self, key_id: str, limits: Limits) -> None:
        """Take one request, or raise :class:`RateLimited` (taking nothing)."""

    async def charge(self, key_id: str, limits: Limits, tokens: int) -> float:
        """Charge generated tokens; returns the token bucket's level after (may be < 0)."""

    async def close(self) -> None: ...


# --- in process -------------------------------------------------------------------------------------


class MemoryBuckets:
    """Buckets in this process. ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[float, float]] = {}  # (key_id, kind) -> (level, at)

    def _level(self, slot: tuple[str, str], rate: float, capacity: float, now: float) -> float:
        state = self._state.get(slot)
        if state is None:
            return capacity
        level, at = state
        return min(capacity, level + max(0.0, now - at) * rate)

    def _store(self, slot: tuple[str, str], level: float, capacity: float, now: float) -> None:
        if level >= capacity:
            self._state.pop(slot, None)  # a full bucket needs no state
        else:
            self._state[slot] = (level, now)

    async def admit(self, key_id: str, limits: Limits) -> None:
        with self._lock:
            now = self._clock()
            refusals = []
            if limits.tokens_per_min is not None:
                level = self._level((key_id, "tok"), limits.token_rate, limits.tokens_per_min, now)
                if level < 1:
                    refusals.append(("tokens", (1 - level) / limits.token_rate))
            req = None
            if limits.rps is not None:
                req = self._level((key_id, "req"), limits.rps, limits.request_capacity, now)
                if req < 1:
                    refusals.append(("requests", (1 - req) / limits.rps))
            if refusals:
                limit, retry = max(refusals, key=lambda r: r[1])
                raise RateLimited(key_id, limit, limits, retry)
            if req is not None:
                self._store((key_id, "req"), req - 1, limits.request_capacity, now)

    async def charge(self, key_id: str, limits: Limits, tokens: int) -> float:
        if limits.tokens_per_min is None or tokens <= 0:
            return math.inf
        with self._lock:
            now = self._clock()
            level = self._level((key_id, "tok"), limits.token_rate, limits.tokens_per_min, now) - tokens
            self._store((key_id, "tok"), level, limits.tokens_per_min, now)
            return level

    async def close(self) -> None:
        self._state.clear()


# --- Redis -----------------------------------------------------------------------------------------

# Each bucket is a hash {level, ts}; a missing key is a full bucket, and every write sets the key
# to expire when the refill would have filled it. Time is Redis's own TIME (so replicas with
# skewed clocks agree) unless ARGV[1] gives one (tests drive the clock that way). Numbers go in
# and out as strings: Lua would truncate a returned float to an integer.
_LUA_COMMON = """
local function now_s()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function level(key, rate, cap, now)
  local v = redis.call('HMGET', key, 'level', 'ts')
  if not v[1] then return cap end
  local dt = now - tonumber(v[2])
  if dt < 0 then dt = 0 end
  return math.min(cap, tonumber(v[1]) + dt * rate)
end
local function store(key, lvl, rate, cap, now)
  if lvl >= cap then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'level', string.format('%.17g', lvl), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', key, math.ceil((cap - lvl) / rate * 1000) + 1000)
  end
end
"""

# KEYS: req, tok. ARGV: now|'', rps (0: off), request capacity, token rate/s (0: off), token capacity
_ADMIT_LUA = (
    _LUA_COMMON
    + """
local now = now_s()
local rps, rcap = tonumber(ARGV[2]), tonumber(ARGV[3])
local trate, tcap = tonumber(ARGV[4]), tonumber(ARGV[5])
local limit, retry = '', 0
if trate > 0 then
  local t = level(KEYS[2], trate, tcap, now)
  if t < 1 then limit, retry = 'tokens', (1 - t) / trate end
end
local r = nil
if rps > 0 then
  r = level(KEYS[1], rps, rcap, now)
  if r < 1 and (1 - r) / rps > retry then limit, retry = 'requests', (1 - r) / rps end
end
if limit ~= '' then return {0, limit, string.format('%.6f', retry)} end
if r ~= nil then store(KEYS[1], r - 1, rps, rcap, now) end
return {1, '', '0'}
"""
)

# KEYS: tok. ARGV: now|'', token rate/s, token capacity, tokens
_CHARGE_LUA = (
    _LUA_COMMON
    + """
local now = now_s()
local trate, tcap = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = level(KEYS[1], trate, tcap, now) - tonumber(ARGV[4])
store(KEYS[1], t, trate, tcap, now)
return string.format('%.17g', t)
"""
)


def redact_url(url: str) -> str:
    """``url`` without its password (redis://user:secret@host -> redis://user:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBuckets:
    """Buckets in Redis, shared by every router replica pointing at ``url``; keys
    ``ragraph:rl:<key_id>:req`` and ``ragraph:rl:<key_id>:tok``.

    If Redis cannot be reached an operation raises :class:`Unavailable` naming the URL: there is
    deliberately no fallback to in-process buckets, which would silently multiply the budget by
    the number of replicas (and hide the outage). ``clock``, if given, replaces Redis's TIME
    (tests only)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ragraph:rl:",
        clock: Callable[[], float] | None = None,
        timeout_s: float = 1.0,
        client: Any = None,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.prefix = prefix
        self._clock = clock
        # Short timeouts and one immediate retry (a pooled connection gone stale after a Redis
        # restart): a request waits at most ~2 x timeout_s on a dead Redis, then UNAVAILABLE.
        self._redis = client or aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),
        )
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._charge = self._redis.register_script(_CHARGE_LUA)

    def _now(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return await script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise Unavailable(f"rate-limit store {redact_url(self.url)} is unreachable: {exc}") from None
        except RedisError as exc:
            raise Unavailable(f"rate-limit store {redact_url(self.url)} failed: {type(exc).__name__}: {exc}") from None

    async def admit(self, key_id: str, limits: Limits) -> None:
        if not limits.active:
            return
        keys = [f"{self.prefix}{key_id}:req", f"{self.prefix}{key_id}:tok"]
        args = [self._now(), limits.rps or 0, limits.request_capacity, limits.token_rate, limits.tokens_per_min or 0]
        ok, limit, retry = await self._run(self._admit, keys, args)
        if int(ok) != 1:
            raise RateLimited(key_id, _text(limit), limits, float(_text(retry)))

    async def charge(self, key_id: str, limits: Limits, tokens: int) -> float:
        if limits.tokens_per_min is None or tokens <= 0:
            return math.inf
        args = [self._now(), limits.token_rate, limits.tokens_per_min, int(tokens)]
        return float(_text(await self._run(self._charge, [f"{self.prefix}{key_id}:tok"], args)))

    async def close(self) -> None:
        await self._redis.aclose()
