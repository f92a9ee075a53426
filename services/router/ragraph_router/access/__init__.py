"""Edge access control for the router: API keys (:mod:`.keys`), per-key rate limits
(:mod:`.limits`) and the one object the servicer and the REST gateway use, :class:`Gate`.

No MLServer and no generated-stub imports here (see ``ragraph_router``)."""

from .gate import ANONYMOUS_PRINCIPAL, Gate, Principal
from .keys import KeyRecord, KeyStore, hash_key
from .limits import Limits, MemoryBuckets, RateLimited, RedisBuckets

__all__ = [
    "ANONYMOUS_PRINCIPAL",
    "Gate",
    "KeyRecord",
    "KeyStore",
    "Limits",
    "MemoryBuckets",
    "Principal",
    "RateLimited",
    "RedisBuckets",
    "hash_key",
]
