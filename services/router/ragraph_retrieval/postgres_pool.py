"""Connections of the ``postgres://`` store: a small thread-safe pool, retries, and the one
mapping from PostgreSQL's errors to ragraph's gRPC-coded ones.

Each borrowing thread gets a connection of its own (opened on first need, so a store can be
created while its database is still down). A connection runs in autocommit mode with the
session settings it is given; a write takes an explicit transaction. Connection loss, deadlocks
and serialization failures are retried (the store's writes are idempotent), then surface as
UNAVAILABLE; a statement timeout is DEADLINE_EXCEEDED; a missing privilege FAILED_PRECONDITION;
a value PostgreSQL refuses INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper
from psycopg.conninfo import make_conninfo
from psycopg.pq import Format, TransactionStatus
from ragraph_client.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable

log = logging.getLogger("ragraph.postgres")
T = TypeVar("T")
Work = Callable[[psycopg.Connection[Any]], T]


class VectorDumper(Dumper):
    """numpy float32 vectors in pgvector's binary form (dimension, unused, big-endian floats);
    queries cast the untyped parameter (``%b::vector``)."""

    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        values = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", values.shape[0], 0) + values.tobytes()


def vector_from_bytes(raw: bytes) -> np.ndarray:
    """A vector from ``vector_send``'s bytes (the same binary form)."""
    (dim,) = struct.unpack_from(">H", raw)
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)


def redact(uri: str) -> str:
    """The URI with its password replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_AUTH_FAILED = ("password authentication failed", "no password supplied", "no pg_hba.conf entry")


def _message(what: str, exc: Exception) -> str:
    return " ".join(f"postgres {what}: {exc}".split())


class Pool:
    """Up to ``size`` connections to ``conninfo``, one per borrowing thread; broken ones are
    dropped and reopened on the next borrow."""

    def __init__(self, conninfo: str, size: int, timeout_s: float, retries: int, settings: dict[str, str]) -> None:
        self._conninfo = conninfo
        self._settings = {"statement_timeout": f"{int(timeout_s * 1000)}ms", **settings}
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._wait_s = timeout_s
        self.retries = retries

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        conn.adapters.register_dumper(np.ndarray, VectorDumper)
        for name, value in self._settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", [name, value])
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise Unavailable(f"postgres: no free connection in the pool after {self._wait_s:g}s")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None:
                if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def run(self, what: str, work: Work[T]) -> T:
        """``work`` on a pooled connection, retried on connection loss and deadlocks."""
        for attempt in range(self.retries + 1):
            try:
                with self.connection() as conn:
                    return work(conn)
            except pg_errors.QueryCanceled as exc:
                raise DeadlineExceeded(_message(what, exc)) from exc
            except pg_errors.InsufficientPrivilege as exc:
                raise FailedPrecondition(
                    _message(what, exc) + " (a superuser can run CREATE EXTENSION vector once in this database; "
                    "the store's role needs CREATE on the schema to make its table)"
                ) from exc
            except (pg_errors.DataError, pg_errors.ProgramLimitExceeded) as exc:
                raise InvalidArgument(_message(what, exc)) from exc
            except psycopg.OperationalError as exc:
                if any(phrase in str(exc) for phrase in _AUTH_FAILED):
                    raise Unauthenticated(_message(what, exc)) from exc
                self.close()  # the idle ones share the cause (a restarted server): reconnect them all
                if attempt == self.retries:
                    raise Unavailable(_message(what, exc)) from exc
                delay = 0.2 * 2**attempt
                log.warning("%s; retry %d/%d in %.1fs", _message(what, exc), attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def conninfo(uri: str, options: dict[str, str]) -> str:
    """libpq's connection string: the URI plus its libpq options, with ragraph's defaults."""
    return make_conninfo(uri, **{"connect_timeout": "10", "application_name": "ragraph", **options})
