"""An in-process LRU cache whose entries also expire after a time-to-live.

Entries are kept in an ``OrderedDict`` ordered from least to most recently used. A successful
``get`` moves the entry to the end; when the cache holds more than ``max_entries`` items, entries are
removed from the front. Each entry also records when it expires. Expiry is *lazy*: an expired entry
is discarded when somebody reads it, or when ``purge_expired`` is called, rather than by a timer.

Defaults: ``max_entries=1024`` and ``default_ttl=60.0`` seconds. A ttl of ``None`` means the entry
never expires and leaves only when evicted by size.

The ``cached`` decorator memoises a function of hashable arguments using one of these caches, and
makes sure that concurrent callers asking for the same missing key compute it only once.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass
class CacheStats:
    """Counters for tuning the cache size and TTL."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0  # removed because the cache was full
    expirations: int = 0  # removed because their ttl had passed

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class TTLLRUCache:
    """Least-recently-used cache with per-entry expiry. All methods are thread-safe."""

    def __init__(
        self, max_entries: int = 1024, default_ttl: float | None = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = clock
        # key -> (value, expires_at or None)
        self._data: OrderedDict[Hashable, tuple[Any, float | None]] = OrderedDict()
        self._lock = threading.RLock()
        self.stats = CacheStats()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the value for ``key`` and mark it recently used, or ``default`` if absent/expired."""
        with self._lock:
            item = self._data.get(key, _MISSING)
            if item is _MISSING:
                self.stats.misses += 1
                return default
            value, expires_at = item
            if expires_at is not None and expires_at <= self._clock():
                del self._data[key]
                self.stats.expirations += 1
                self.stats.misses += 1
                return default
            self._data.move_to_end(key)
            self.stats.hits += 1
            return value

    def set(self, key: Hashable, value: Any, ttl: float | None = _MISSING) -> None:  # type: ignore[assignment]
        """Store ``value``; ``ttl`` overrides the default (pass ``None`` for no expiry)."""
        ttl = self.default_ttl if ttl is _MISSING else ttl
        expires_at = None if ttl is None else self._clock() + ttl
        with self._lock:
            self._data[key] = (value, expires_at)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                # popitem(last=False) removes the least recently used entry.
                self._data.popitem(last=False)
                self.stats.evictions += 1

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; return True if it was present. Use after writing the source of truth."""
        with self._lock:
            return self._data.pop(key, _MISSING) is not _MISSING

    def purge_expired(self) -> int:
        """Drop every expired entry now and return how many were dropped. O(n)."""
        now = self._clock()
        with self._lock:
            dead = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
            for k in dead:
                del self._data[k]
            self.stats.expirations += len(dead)
            return len(dead)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        # Deliberately goes through get() so that expired entries are not reported as present.
        return self.get(key, _MISSING) is not _MISSING


def cached(max_entries: int = 1024, ttl: float | None = 60.0) -> Callable:
    """Decorator: memoise a function in a ``TTLLRUCache`` keyed by its arguments.

    Only one thread computes a given missing key; others asking for the same key at the same time
    wait for that result instead of calling the function again (a per-key lock, so unrelated keys
    do not block each other). Exceptions are not cached.
    """

    def decorator(fn: Callable) -> Callable:
        cache = TTLLRUCache(max_entries=max_entries, default_ttl=ttl)
        key_locks: dict = {}
        key_locks_guard = threading.Lock()

        @functools.wraps(fn)
        def wrapper(*args: Hashable, **kwargs: Hashable) -> Any:
            key = (args, tuple(sorted(kwargs.items())))
            value = cache.get(key, _MISSING)
            if value is not _MISSING:
                return value
            with key_locks_guard:
                lock = key_locks.setdefault(key, threading.Lock())
            with lock:
                # Another thread may have filled the entry while we waited for the lock.
                value = cache.get(key, _MISSING)
                if value is _MISSING:
                    value = fn(*args, **kwargs)
                    cache.set(key, value)
            with key_locks_guard:
                key_locks.pop(key, None)
            return value

        wrapper.cache = cache  # type: ignore[attr-defined]
        return wrapper

    return decorator


if __name__ == "__main__":
    c = TTLLRUCache(max_entries=2, default_ttl=0.5)
    c.set("a", 1)
    c.set("b", 2)
    c.get("a")  # "a" is now the most recently used
    c.set("c", 3)  # evicts "b", the least recently used
    print(sorted(k for k in ("a", "b", "c") if k in c), c.stats)
    time.sleep(0.6)
    print("after ttl:", c.get("a"), c.stats.hit_ratio)
