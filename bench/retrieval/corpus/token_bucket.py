"""Token-bucket rate limiting for request handlers.

A token bucket holds up to ``capacity`` tokens and gains new tokens continuously at ``rate`` tokens
per second. Each request spends one or more tokens; when the bucket does not hold enough, the
request is rejected (or the caller waits). The capacity sets how large a burst is tolerated after a
quiet period, while the rate sets the sustained throughput. For example ``TokenBucket(rate=5,
capacity=20)`` lets a client send 20 requests at once, then about 5 per second after that.

Refilling is computed lazily from the elapsed time on each call, so there is no background thread.
Time comes from ``time.monotonic`` so that wall-clock adjustments (NTP, daylight saving) can never
grant or steal tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """A thread-safe token bucket.

    Args:
        rate: tokens added per second; must be positive.
        capacity: the most tokens the bucket can hold, i.e. the largest burst allowed.
        clock: a monotonic time source in seconds, injectable for tests.
    """

    rate: float
    capacity: float
    clock: Clock = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity <= 0:
            raise ValueError("rate and capacity must both be positive")
        # A new bucket starts full, so the first burst is not penalised.
        self._tokens = float(self.capacity)
        self._updated = self.clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        """Add the tokens earned since the last update. Caller must hold the lock."""
        now = self.clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Spend ``tokens`` if available and return True; otherwise spend nothing and return False."""
        if tokens > self.capacity:
            # Such a request could never succeed; refusing loudly beats waiting forever.
            raise ValueError(f"cannot acquire {tokens} tokens from a bucket of {self.capacity}")
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` would be available, or 0.0 if they are available now.

        Useful for filling in a ``Retry-After`` header on an HTTP 429 response.
        """
        with self._lock:
            self._refill()
            missing = tokens - self._tokens
            return 0.0 if missing <= 0 else missing / self.rate

    def acquire(self, tokens: float = 1.0, timeout: float | None = None) -> bool:
        """Block until ``tokens`` are spent, or until ``timeout`` seconds pass (then return False)."""
        deadline = None if timeout is None else self.clock() + timeout
        while True:
            if self.try_acquire(tokens):
                return True
            delay = self.wait_time(tokens)
            if deadline is not None:
                remaining = deadline - self.clock()
                if remaining <= 0 or delay > remaining:
                    return False
            # Sleep a little less than needed and re-check, as other threads compete for tokens.
            time.sleep(max(0.001, delay * 0.9))

    @property
    def available(self) -> float:
        """Tokens in the bucket right now (after refilling)."""
        with self._lock:
            self._refill()
            return self._tokens


class KeyedRateLimiter:
    """One token bucket per key, for example per API key or per client IP address.

    Buckets are created on first use. Buckets that have not been touched for ``idle_ttl`` seconds
    (300 by default) are dropped during periodic sweeps, which keeps memory bounded when many
    clients appear once and never return. A dropped bucket would have refilled to full anyway, so
    forgetting it changes no decision.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        idle_ttl: float = 300.0,
        clock: Clock = time.monotonic,
        sweep_every: int = 1000,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.idle_ttl = idle_ttl
        self.clock = clock
        self.sweep_every = sweep_every
        self._buckets: dict[str, TokenBucket] = {}
        self._last_seen: dict[str, float] = {}
        self._calls = 0
        self._lock = threading.Lock()

    def allow(self, key: str, tokens: float = 1.0) -> bool:
        """Return True if the request for ``key`` may proceed."""
        with self._lock:
            self._calls += 1
            if self._calls % self.sweep_every == 0:
                self._sweep()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.capacity, clock=self.clock)
                self._buckets[key] = bucket
            self._last_seen[key] = self.clock()
        return bucket.try_acquire(tokens)

    def retry_after(self, key: str, tokens: float = 1.0) -> float:
        """Seconds the client ``key`` should wait before retrying; 0.0 for unknown keys."""
        with self._lock:
            bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait_time(tokens)

    def _sweep(self) -> None:
        """Forget buckets idle for longer than ``idle_ttl``. Caller must hold the lock."""
        cutoff = self.clock() - self.idle_ttl
        stale = [k for k, seen in self._last_seen.items() if seen < cutoff]
        for key in stale:
            del self._buckets[key]
            del self._last_seen[key]

    def __len__(self) -> int:
        return len(self._buckets)


if __name__ == "__main__":
    # Demonstration: a burst of 3, refilling at 2 tokens per second.
    limiter = KeyedRateLimiter(rate=2, capacity=3)
    for i in range(5):
        print(i, limiter.allow("client-a"), round(limiter.retry_after("client-a"), 2))
    time.sleep(1.0)
    print("after 1s:", limiter.allow("client-a"))
