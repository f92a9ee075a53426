"""The ``postgres://`` store against a real PostgreSQL + pgvector (started by the session's
``postgres_server`` fixture): the filter table every backend passes, the same answers as the
embedded store, top-k order and cosine scores against brute force, the HNSW index, idempotent
upserts, concurrent writers, kill -9 in the middle of writes, and the URI's options and error
codes. The rest of the store contract runs in test_store_contract.py against this store and
the embedded one alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from ragraph_client.errors import FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable
from ragraph_retrieval import filters
from ragraph_retrieval.local import LocalStore
from ragraph_retrieval.postgres_store import PostgresStore
from ragraph_retrieval.store import Record, open_store

from tests.fixtures.filter_cases import FILTER_CASES, FILTER_RECORDS, case_ids
from tests.fixtures.postgres_server import PostgresServer
from tests.fixtures.servers import REPO, free_port


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _store(server: PostgresServer, table: str | None = None, **options: str) -> PostgresStore:
    store = open_store(server.uri(table or _table(), **options))
    assert isinstance(store, PostgresStore)
    return store


@pytest.fixture()
def store(postgres_server: PostgresServer) -> Iterator[PostgresStore]:
    s = _store(postgres_server)
    yield s
    s.close()


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _sql(server: PostgresServer, query: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(server.uri(), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# --- the shared contract ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filter_store(postgres_server: PostgresServer) -> Iterator[PostgresStore]:
    s = _store(postgres_server, namespace="filters")
    vectors = _vectors(len(FILTER_RECORDS), 8)
    s.upsert([Record(r["id"], vectors[i], r["metadata"]) for i, r in enumerate(FILTER_RECORDS)])
    yield s
    s.close()


@pytest.mark.parametrize(("name", "spec", "expected"), FILTER_CASES, ids=case_ids())
def test_filter_table(filter_store: PostgresStore, name: str, spec: dict, expected: set[str]) -> None:
    found = {m.id for m in filter_store.query(np.ones(8, np.float32), top_k=100, filter=filters.parse(spec))}
    assert found == expected, name


def test_the_largest_filter_the_parser_accepts_runs(filter_store: PostgresStore) -> None:
    """filters.py's limits are the only gate: a filter at every limit is valid SQL here too."""
    many = [f"x{i}" for i in range(filters.MAX_LIST - 1)] + ["a.md"]
    nested: dict = {"doc_id": {"$in": many}}
    for depth in range(filters.MAX_DEPTH - 1):  # under the top-level $and: MAX_DEPTH levels in all
        nested = {"$or": [nested, {"n": {"$gt": 100 + depth}}]}
    rest = filters.MAX_CONDITIONS - 1 - (filters.MAX_DEPTH - 1)
    spec = {"$and": [nested] + [{"rating": {"$lt": 10 + i}} for i in range(rest)]}
    node = filters.parse(spec)
    found = {m.id for m in filter_store.query(np.ones(8, np.float32), top_k=100, filter=node)}
    assert found == {"r01", "r02", "r03"}
    with pytest.raises(InvalidArgument, match="more than 1024"):
        filters.parse({"doc_id": {"$in": [*many, "one-too-many"]}})
    with pytest.raises(InvalidArgument, match="more than 128 field conditions"):
        filters.parse({**spec, "n": 1})


def test_same_answers_as_the_embedded_store(filter_store: PostgresStore, tmp_path: Path) -> None:
    local = LocalStore(str(tmp_path / "local"))
    vectors = _vectors(len(FILTER_RECORDS), 8)
    local.upsert([Record(r["id"], vectors[i], r["metadata"]) for i, r in enumerate(FILTER_RECORDS)])
    specs = [None, {"genre": "drama"}, {"year": {"$gte": 2005}}, {"tags": {"$nin": ["funny"]}}]
    for q in _vectors(5, 8, seed=9):
        for spec in specs:
            node = filters.parse(spec)
            want = local.query(q, 6, node)
            got = filter_store.query(q, 6, node)
            assert [m.id for m in got] == [m.id for m in want]
            assert np.allclose([m.score for m in got], [m.score for m in want], atol=1e-5)
            assert [m.metadata for m in got] == [m.metadata for m in want]


def test_top_k_order_and_cosine_scores_match_brute_force(postgres_server: PostgresServer) -> None:
    # ef_search above the row count: the HNSW scan sees every row, so the answer must be exact
    with _store(postgres_server, ef_search="1000") as store:
        vectors = _vectors(600, 24)
        store.upsert([Record(f"v{i}", v, {"n": i}) for i, v in enumerate(vectors)])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for q in _vectors(5, 24, seed=1):
            scores = unit @ (q / np.linalg.norm(q))
            expected = np.argsort(-scores)[:10]
            matches = store.query(q * 3.5, top_k=10)  # cosine: the query's length does not matter
            assert [m.id for m in matches] == [f"v{i}" for i in expected]
            assert np.allclose([m.score for m in matches], scores[expected], atol=1e-5)
            assert matches[0].metadata == {"n": int(expected[0])}
        q = _vectors(1, 24, seed=2)[0]
        keep = [i for i in range(600) if i % 7 == 0]
        expected = sorted(keep, key=lambda i: -float(unit[i] @ q))[:5]
        got = store.query(q, top_k=5, filter=filters.parse({"n": {"$in": keep}}))
        assert [m.id for m in got] == [f"v{i}" for i in expected]


def _hnsw_scans(server: PostgresServer, table: str) -> int:
    rows = _sql(server, "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", [f"{table}_hnsw"])
    return int(rows[0][0])  # type: ignore[call-overload]


def test_queries_use_the_hnsw_index_with_good_recall(postgres_server: PostgresServer) -> None:
    table = _table()
    # pgvector's ef_search 40: with the store's 100 the planner prefers an exact scan at this size
    with _store(postgres_server, table, ef_search="40", max_scan_tuples="30000") as store:
        vectors = _vectors(3000, 32)
        store.upsert([Record(f"v{i}", v, {"bucket": i % 10}) for i, v in enumerate(vectors)])
        _sql(postgres_server, f"ANALYZE {table}")
        before = _hnsw_scans(postgres_server, table)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        hits = 0
        for q in _vectors(20, 32, seed=3):
            found = {m.id for m in store.query(q, 10)}
            hits += len(found & {f"v{i}" for i in np.argsort(-(unit @ q))[:10]})
        assert hits / 200 >= 0.9
        # filters keeping a tenth of the rows still fill top_k: equality may take the GIN index,
        # a range filters during the HNSW scan, which goes on past ef_search (iterative scan)
        for spec, bucket in (({"bucket": 3}, 3), ({"bucket": {"$gte": 9}}, 9)):
            filtered = store.query(_vectors(1, 32, seed=4)[0], 50, filters.parse(spec))
            assert len(filtered) == 50 and {m.metadata["bucket"] for m in filtered} == {bucket}
        deadline = time.monotonic() + 10  # index statistics reach the view within a second or so
        while _hnsw_scans(postgres_server, table) <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _hnsw_scans(postgres_server, table) > before
        with store._pool.connection() as conn:
            assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("40",)
            assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("strict_order",)
            assert conn.execute("SHOW hnsw.max_scan_tuples").fetchone() == ("30000",)


def test_an_untouched_table_reads_empty_and_deletes_nothing(store: PostgresStore) -> None:
    assert store.query(np.ones(4, np.float32)) == []
    assert store.fetch(["a"]) == {} and store.document_ids() == set() and store.document_chunks("d") == {}
    assert store.delete(["a"]) == 0 and store.delete_document("d") == 0
    store.delete_namespace()
    assert store.stats().namespaces == {} and store.dimension is None


def test_text_postgres_cannot_hold_is_refused_naming_the_field(store: PostgresStore) -> None:
    """U+0000 fits SQLite but not PostgreSQL's text or JSONB: refused before anything is written."""
    store.upsert([Record("ok", np.ones(4, np.float32))])
    ones = np.ones(4, np.float32)
    cases = {
        "metadata field 'text' holds a NUL": Record("x", ones, {"text": "a\x00b"}),
        "metadata field 'tags' holds a NUL": Record("x", ones, {"tags": ["ok", "\x00"]}),
        "metadata field 'k\\x00' holds a NUL": Record("x", ones, {"k\x00": 1}),
        "id holds a NUL": Record("x\x00", ones),
    }
    for needle, record in cases.items():
        with pytest.raises(InvalidArgument) as info:
            store.replace([Record("fine", ones), record], ["ok"])
        assert needle in str(info.value)
    assert set(store.fetch(["ok", "fine"])) == {"ok"}


def test_mixed_dimensions_in_a_first_write_are_refused(store: PostgresStore) -> None:
    with pytest.raises(InvalidArgument, match=r"'b': vector has shape \[3\], the store wants \[2\]"):
        store.upsert([Record("a", np.ones(2, np.float32)), Record("b", np.ones(3, np.float32))])
    assert store.stats().namespaces == {}


def test_a_zero_query_vector_scores_zero(store: PostgresStore) -> None:
    store.upsert([Record("a", np.ones(4, np.float32))])
    assert [(m.id, m.score) for m in store.query(np.zeros(4, np.float32))] == [("a", 0.0)]


def _row_versions(server: PostgresServer, table: str) -> dict[str, str]:
    return {str(rid): str(xmin) for rid, xmin in _sql(server, f"SELECT id, xmin::text FROM {table}")}


def test_unchanged_upserts_write_no_row(postgres_server: PostgresServer) -> None:
    table = _table()
    with _store(postgres_server, table) as store:
        v = _vectors(5, 8)
        records = [Record(f"d#{i}", v[i], {"doc_id": "d", "text": f"chunk {i}"}) for i in range(5)]
        store.upsert(records)
        before = _row_versions(postgres_server, table)
        assert store.upsert(records) == 5
        store.replace(records, [])
        assert _row_versions(postgres_server, table) == before  # not one new row version
        changed = [records[0], Record("d#1", v[1], {"doc_id": "d", "text": "edited"}), Record("d#2", v[0], {})]
        store.upsert(changed)
        after = _row_versions(postgres_server, table)
        assert {k for k in before if before[k] != after[k]} == {"d#1", "d#2"}
        assert store.fetch(["d#2"])["d#2"].metadata == {} and store.document_ids() == {"d"}


def test_concurrent_first_writers_and_overlapping_upserts(postgres_server: PostgresServer) -> None:
    """Six routers or ingest jobs writing one new table at once: one of them creates it, every
    write lands, and no row mixes two writers' vector and metadata."""
    table, writers, ids = _table(), 6, 300
    start, errors = threading.Barrier(writers), []

    def write(w: int) -> None:
        order = np.random.default_rng(w).permutation(ids)
        try:
            with _store(postgres_server, table) as store:
                start.wait()
                for part in np.array_split(order, 6):
                    store.upsert([Record(f"r{i}", np.full(8, w + 1, np.float32), {"w": w}) for i in part])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with _store(postgres_server, table) as store:
        assert store.stats().namespaces == {"": ids}
        for rid, record in store.fetch([f"r{i}" for i in range(ids)]).items():
            assert np.all(record.vector == record.metadata["w"] + 1), rid


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ragraph_retrieval.store import Record, open_store

    store = open_store(sys.argv[1])
    rng = np.random.default_rng(0)
    for gen in range(1_000_000):
        doc = f"doc{gen % 4}"
        n = 60 if gen % 2 else 35  # documents grow and shrink: stale chunks are deleted
        old = store.document_chunks(doc)
        records = [Record(f"{doc}#{i}", rng.standard_normal(64).astype(np.float32),
                          {"doc_id": doc, "gen": gen, "n_chunks": n, "text": "x" * 2000}) for i in range(n)]
        store.replace(records, sorted(set(old) - {r.id for r in records}))
        print(gen, flush=True)
    """
)


def _consistent(store: PostgresStore) -> None:
    for doc in store.document_ids():
        chunks = store.document_chunks(doc)
        assert len({m["gen"] for m in chunks.values()}) == 1, doc
        assert {m["n_chunks"] for m in chunks.values()} == {len(chunks)}, doc
        assert sorted(chunks) == sorted(f"{doc}#{i}" for i in range(len(chunks))), doc


def _open_transactions_lost(server: PostgresServer) -> int:
    return server.log_path.read_text(errors="replace").count(
        "unexpected EOF on client connection with an open transaction"
    )


def test_kill_9_mid_write_leaves_whole_documents(postgres_server: PostgresServer) -> None:
    """The writing process is killed inside its transaction: held there by a row lock this test
    takes on a chunk of every document, after it has written some rows (the server logs the lost
    open transaction). Every document is still all of one generation, with all its chunks."""
    table = _table()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "services/router"), str(REPO / "clients")])}
    with (
        psycopg.connect(postgres_server.uri(), autocommit=True) as locker,
        psycopg.connect(postgres_server.uri(), autocommit=True) as watch,
    ):
        for round_ in range(3):
            name = f"writer{round_}"
            lost = _open_transactions_lost(postgres_server)
            proc = subprocess.Popen(
                [sys.executable, "-c", _WRITER, postgres_server.uri(table, application_name=name)],
                stdout=subprocess.PIPE,
                env=env,
            )
            try:
                assert proc.stdout is not None
                for _ in range(4 + round_):  # every document written at least once
                    assert proc.stdout.readline(), "the writer died"
                with locker.transaction():
                    locker.execute(f"SELECT 1 FROM {table} WHERE id LIKE 'doc_#20' FOR UPDATE")
                    deadline = time.monotonic() + 30
                    while not watch.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
                        " AND backend_xid IS NOT NULL",
                        [name],
                    ).fetchall():
                        assert time.monotonic() < deadline, "the writer never reached the locked row"
                        time.sleep(0.01)
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            finally:
                if proc.poll() is None:  # a failed assertion above: no stray writer
                    proc.kill()
                    proc.wait()
            deadline = time.monotonic() + 10
            while _open_transactions_lost(postgres_server) == lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _open_transactions_lost(postgres_server) == lost + 1
            with _store(postgres_server, table) as store:
                _consistent(store)
                assert store.document_ids() == {"doc0", "doc1", "doc2", "doc3"}


def test_a_connection_killed_mid_write_is_retried_and_lands_once(postgres_server: PostgresServer) -> None:
    """The server ends the store's session twice in the middle of one write (a failover, a
    restart): each killed attempt is rolled back, the third lands, whole."""
    table = _table()
    with _store(postgres_server, table, application_name="victim") as store:
        store.upsert([Record("seed", np.ones(64, np.float32))])
        records = [Record(f"d#{i}", _vectors(1, 64, seed=i)[0], {"doc_id": "d", "gen": 1}) for i in range(3000)]
        killed: list[int] = []

        def terminate() -> None:
            deadline = time.monotonic() + 60
            with psycopg.connect(postgres_server.uri(), autocommit=True) as conn:
                while len(killed) < 2 and time.monotonic() < deadline:
                    rows = conn.execute(
                        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                        "'victim' AND state IN ('active', 'idle in transaction')"
                    ).fetchall()
                    killed.extend(pid for pid, done in rows if done)
                    time.sleep(0.002)

        killer = threading.Thread(target=terminate)
        killer.start()
        store.replace(records, ["seed"])
        killer.join()
        assert len(killed) == 2
        assert store.stats().namespaces == {"": 3000}
        chunks = store.document_chunks("d")
        assert sorted(chunks) == sorted(f"d#{i}" for i in range(3000)) and {m["gen"] for m in chunks.values()} == {1}


def test_a_restarted_server_costs_no_failed_call(postgres_server: PostgresServer) -> None:
    """Every pooled connection dies at once (what a database restart or failover does to them):
    the next call reconnects, with a single retry, instead of failing on one stale connection
    after another."""
    with _store(postgres_server, application_name="stale", pool="4", retries="1") as store:
        store.upsert([Record("a", np.ones(4, np.float32))])
        together = threading.Barrier(4)

        def hold() -> None:
            with store._pool.connection():
                together.wait()

        threads = [threading.Thread(target=hold) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store._pool._idle) == 4
        ended = _sql(
            postgres_server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stale'"
        )
        assert len(ended) == 4
        assert [m.id for m in store.query(np.ones(4, np.float32))] == ["a"]


# --- the URI, connections and errors -------------------------------------------------------------


def test_uri_options_are_checked_and_named(postgres_server: PostgresServer) -> None:
    base = postgres_server.uri()
    cases = {
        "?colour=blue": "unknown option(s) ['colour']",
        "?table=Bad-Name": "table='Bad-Name'",
        "?m=1": "m='1' must be an integer from 2 to 100",
        "?m=x": "m='x'",
        "?m=32&ef_construction=40": "ef_construction must be at least 2 * m (64)",
        "?ef_search=0": "ef_search='0'",
        "?max_scan_tuples=-1": "max_scan_tuples='-1'",
        "?timeout=soon": "timeout='soon' must be seconds",
        "?pool=0": "pool='0'",
    }
    for query, needle in cases.items():
        with pytest.raises(InvalidArgument) as info:
            open_store(base + query)
        assert needle in str(info.value), query
    store = open_store(base.replace("postgres://", "postgresql://") + "?sslmode=disable")
    assert isinstance(store, PostgresStore) and (store.ef_search, store.table) == (100, "ragraph_vectors")


def test_password_stays_out_of_the_uri_shown(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(postgres_server)
    assert postgres_server.password not in store.uri and ":***@" in store.uri
    # no password in the URI: libpq's PGPASSWORD supplies it
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    env_store = open_store(postgres_server.uri(_table(), password=False))
    env_store.upsert([Record("a", np.ones(2, np.float32))])
    assert env_store.stats().total == 1
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(Unauthenticated, match="password authentication failed"):
        open_store(postgres_server.uri(_table(), password=False)).stats()


def test_a_down_database_is_unavailable_not_a_start_failure() -> None:
    started = time.monotonic()
    store = open_store(f"postgres://ragraph:pw@127.0.0.1:{free_port()}/db?retries=1")  # nothing listens
    with pytest.raises(Unavailable, match="postgres query: .*Connection refused"):
        store.query(np.ones(4, np.float32))
    assert time.monotonic() - started < 10


def test_index_options_must_match_the_built_index(postgres_server: PostgresServer) -> None:
    table = _table()
    with _store(postgres_server, table, m="8", ef_construction="32") as store:
        store.upsert([Record("a", np.ones(4, np.float32))])
    options = _sql(postgres_server, "SELECT reloptions FROM pg_class WHERE relname = %s", [f"{table}_hnsw"])
    assert options == [(["m=8", "ef_construction=32"],)]
    assert _store(postgres_server, table).stats().total == 1  # leaving them out is fine
    with pytest.raises(InvalidArgument, match="m=16, but table .* was built with m=8"):
        _store(postgres_server, table, m="16").stats()


def test_a_role_that_cannot_create_the_extension_is_told_what_to_do(postgres_server: PostgresServer) -> None:
    name = f"limited_{uuid.uuid4().hex[:8]}"
    _sql(postgres_server, f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'")
    _sql(postgres_server, f"CREATE DATABASE {name} OWNER {name}")
    uri = f"postgres://{name}:pw-{name}@127.0.0.1:{postgres_server.port}/{name}?table=docs"
    with pytest.raises(FailedPrecondition, match="permission denied to create extension.*CREATE EXTENSION vector"):
        open_store(uri).upsert([Record("a", np.ones(4, np.float32))])
    owner_uri = postgres_server.uri().rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(owner_uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    store = open_store(uri)  # the extension is there: the role makes its own table
    store.upsert([Record("a", np.ones(4, np.float32))])
    assert [m.id for m in store.query(np.ones(4, np.float32))] == ["a"]
