"""API keys: format, hashing, the key file and the router's view of it (:class:`KeyStore`).

A key is ``rgk_<key_id>_<secret>``: ``key_id`` is 8 hex characters, public (it names the key in
``ragraph keys list``, in logs and in rate-limit messages); ``secret`` is
``secrets.token_urlsafe(32)`` (256 random bits). Only ``sha256:<hex>`` of the whole key is
stored, in the key file or in ``RAGRAPH_ROUTER_API_KEYS``.

A single fast SHA-256 is the right hash here, unlike for passwords: a password is a guessable
low-entropy secret, so its hash must be slow and salted to make trying candidates expensive; a
key's secret is 256 uniformly random bits, so a stolen hash cannot be inverted by guessing at any
speed (2^256 candidates), and a fast hash keeps verification cheap on every request. Hashes are
compared with :func:`hmac.compare_digest` all the same.

Never log or echo a presented key: messages and logs carry the key id at most.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragraph_client.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated

from .limits import Limits

log = logging.getLogger("ragraph.router.access")

KEY_PREFIX = "rgk_"
HASH_PREFIX = "sha256:"
DEFAULT_KEYS_FILE = ".ragraph/keys.json"
KEYS_FILE_ENV = "RAGRAPH_ROUTER_API_KEYS_FILE"
RELOAD_INTERVAL_S = 0.5
MAX_KEY_CHARS = 512  # longer presented values are rejected before hashing

_KEY_RE = re.compile(r"rgk_([0-9a-f]{8})_([A-Za-z0-9_-]{16,})")
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ID_RE = re.compile(r"[0-9a-f]{8}")


def generate_key(taken: Iterable[str] = ()) -> tuple[str, str]:
    """A new ``(key, key_id)``; ``key_id`` avoids the ids in ``taken``."""
    used = set(taken)
    while True:
        key_id = secrets.token_hex(4)
        if key_id not in used:
            return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of the whole key (the form stored in the key file and in api_keys)."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed ``rgk_<id>_<secret>`` key, else None."""
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


def is_key_hash(value: str) -> bool:
    return _HASH_RE.fullmatch(value) is not None


def hashes_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two ``sha256:<hex>`` strings."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class KeyRecord:
    """One entry of the key file."""

    id: str
    name: str
    hash: str
    created: str
    revoked: str | None = None
    limits: Limits = field(default_factory=Limits)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hash": self.hash,
            "created": self.created,
            "revoked": self.revoked,
            "limits": self.limits.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> KeyRecord:
        if not isinstance(data, dict):
            raise ValueError("a key entry must be an object")
        key_id, hashed = str(data.get("id", "")), str(data.get("hash", ""))
        if not _ID_RE.fullmatch(key_id):
            raise ValueError(f"key id must be 8 hex characters, got {key_id!r}")
        if not is_key_hash(hashed):
            raise ValueError(f"key {key_id}: hash must be 'sha256:<64 hex>'")
        revoked = data.get("revoked")
        return cls(
            id=key_id,
            name=str(data.get("name", "")),
            hash=hashed,
            created=str(data.get("created", "")),
            revoked=None if revoked is None else str(revoked),
            limits=Limits.from_json(data.get("limits")),
        )


# --- the key file ----------------------------------------------------------------------------------


def default_keys_file() -> Path:
    return Path(os.environ.get(KEYS_FILE_ENV) or DEFAULT_KEYS_FILE)


def read_keys(path: str | Path) -> list[KeyRecord]:
    """The entries of a key file: ``{"keys": [...]}`` (a bare list is accepted too)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = f"create a key with `ragraph keys create --file {path}`"
        raise FailedPrecondition(f"API key file {path} not found: {hint}") from None
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"API key file {path} is unreadable: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise FailedPrecondition(f'API key file {path}: expected {{"keys": [...]}}')
    records = []
    for i, entry in enumerate(entries):
        try:
            records.append(KeyRecord.from_json(entry))
        except (ValueError, TypeError) as exc:
            raise FailedPrecondition(f"API key file {path}, entry {i}: {exc}") from None
    ids = [r.id for r in records]
    if len(ids) != len(set(ids)):
        raise FailedPrecondition(f"API key file {path}: duplicate key ids")
    return records


def write_keys(path: str | Path, records: Sequence[KeyRecord]) -> None:
    """Write the key file atomically: a 0600 temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"keys": [r.to_json() for r in records]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file between concurrent ``ragraph keys`` runs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def create_key(
    path: str | Path,
    name: str,
    rps: float | None = None,
    burst: int | None = None,
    tokens_per_min: int | None = None,
) -> tuple[str, KeyRecord]:
    """Add a new key to the file (created if missing). Returns ``(key, record)``: the key exists
    only in this return value; the file keeps its hash."""
    path = Path(path)
    limits = Limits.from_json({"rps": rps, "burst": burst, "tokens_per_min": tokens_per_min})
    with _locked(path):
        records = read_keys(path) if path.exists() else []
        key, key_id = generate_key(r.id for r in records)
        record = KeyRecord(id=key_id, name=name, hash=hash_key(key), created=_now(), limits=limits)
        write_keys(path, [*records, record])
    return key, record


def revoke_key(path: str | Path, key_id: str) -> KeyRecord:
    """Mark a key revoked (kept in the file, so ``list`` shows it). Revoking twice keeps the
    first timestamp."""
    path = Path(path)
    with _locked(path):
        records = read_keys(path)
        for i, record in enumerate(records):
            if record.id == key_id:
                if record.revoked is None:
                    record = replace(record, revoked=_now())
                    records[i] = record
                    write_keys(path, records)
                return record
    raise NotFound(f"no key with id {key_id!r} in {path}")


# --- the router's view -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    records: dict[str, KeyRecord]
    stamp: tuple[int, int, int] | None  # (inode, mtime_ns, size) of the file read


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


ENV_KEY_NAME = "env"


class KeyStore:
    """The keys a router accepts: a key file (re-read when its inode, mtime or size changes,
    checked at most every ``reload_interval_s``, so ``ragraph keys revoke`` takes effect on a
    running router) and/or env-var hashes (``RouterSettings.api_keys``)."""

    def __init__(
        self,
        path: str | Path | None = None,
        env_hashes: Sequence[str] = (),
        *,
        reload_interval_s: float = RELOAD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for i, value in enumerate(env_hashes):
            if not is_key_hash(value):  # never echo the entry: it may be a key pasted by mistake
                raise InvalidArgument(
                    f"api_keys entry {i + 1} is not 'sha256:<64 hex>' (a key's hash, as `ragraph keys hash` prints)"
                )
        self.path = Path(path) if path is not None else None
        self.env_hashes = tuple(env_hashes)
        self.reload_interval_s = reload_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._snapshot = _Snapshot({}, None)
        if self.path is not None:
            stamp = _stamp(self.path)
            self._snapshot = _Snapshot({r.id: r for r in read_keys(self.path)}, stamp)

    @classmethod
    def load(cls, path: str | Path | None, env_hashes: Sequence[str] = (), **kwargs: Any) -> KeyStore:
        """Read the key file now (FailedPrecondition if it is missing or invalid)."""
        return cls(path, env_hashes, **kwargs)

    def _refresh(self) -> _Snapshot:
        if self.path is None:
            return self._snapshot
        now = self._clock()
        with self._lock:
            if now - self._checked < self.reload_interval_s:
                return self._snapshot
            self._checked = now
            stamp = _stamp(self.path)
            if stamp == self._snapshot.stamp:
                return self._snapshot
            try:
                records = read_keys(self.path)
            except FailedPrecondition as exc:
                # keep serving the last good set (a failed read cannot have revoked anything);
                # logged once per bad version of the file
                log.error("keeping the previous API keys: %s", exc.message)
                self._snapshot = _Snapshot(self._snapshot.records, stamp)
                return self._snapshot
            self._snapshot = _Snapshot({r.id: r for r in records}, stamp)
            log.info("reloaded API key file %s: %d keys", self.path, len(records))
            return self._snapshot

    def records(self) -> list[KeyRecord]:
        return list(self._refresh().records.values())

    def get(self, key_id: str) -> KeyRecord | None:
        return self._refresh().records.get(key_id)

    def limits_for(self, key_id: str) -> Limits:
        """A key's own limits (all None for env-var keys and unknown ids)."""
        record = self.get(key_id)
        return record.limits if record is not None else Limits()

    def verify(self, key: str) -> KeyRecord:
        """The record of a presented key. Unauthenticated ("invalid API key", "API key <id>
        was revoked", ...) otherwise; the key itself is never in the message or the logs."""
        if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
            raise Unauthenticated("malformed API key")
        presented = hash_key(key)
        key_id = key_id_of(key)
        snapshot = self._refresh()
        record = snapshot.records.get(key_id) if key_id is not None else None
        if record is not None and hashes_equal(presented, record.hash):
            if record.revoked is not None:
                log.info("rejected API key %s: revoked at %s", record.id, record.revoked)
                raise Unauthenticated(f"API key {record.id} was revoked")
            return record
        matched = False
        for stored in self.env_hashes:  # every one, so the time taken does not say which matched
            matched |= hashes_equal(presented, stored)
        if matched:
            return KeyRecord(
                id=key_id or presented[len(HASH_PREFIX) : len(HASH_PREFIX) + 8],
                name=ENV_KEY_NAME,
                hash=presented,
                created="",
            )
        if key_id is None and not self.env_hashes:
            raise Unauthenticated("malformed API key: expected 'rgk_<id>_<secret>'")
        if key_id is not None:  # debug: anyone can send made-up ids (the unauthenticated metric counts them)
            log.debug("rejected API key %s: unknown id or wrong secret", key_id)
        raise Unauthenticated("invalid API key")
