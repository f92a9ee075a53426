"""Store query latency: the embedded store (``local://``: exact, ``index=hnsw`` and filtered
queries through ``LocalStore.query``) next to raw numpy and faiss on the same normalised matrix,
and ``postgres://`` (PostgreSQL + pgvector's HNSW, bench/store_postgres.py) on the same records
and queries, side by side in one run on random float32 vectors (``--data lowrank``: a low-rank
stand-in for real embeddings). Recall@k is against numpy's exact answer; the ingest rate is
``upsert`` in batches of ``--upsert-batch``.

    python bench/store.py [--sizes 10000,100000] [--queries 200] [--dim 384] [--ef-search 64,256] [--data lowrank]
                          [--postgres auto|off|URI] [--pg-ef-search 40,100]

Methods are timed in interleaved blocks (every method runs a block of queries, then the next, for
``--rounds`` rounds), so the noise of a shared machine falls on all of them alike. Before timing,
the first query of each store is timed on its own: it loads the matrix from SQLite (and builds the
HNSW graph). Prints markdown tables (p50/p95/p99 ms, ratio to the store's exact query, recall@k
against exact) and whether exact top-10 at 100k meets the p50 <= 10 ms goal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragraph_retrieval import filters  # noqa: E402
from ragraph_retrieval.local import LocalStore, _top_k  # noqa: E402
from ragraph_retrieval.store import Record, VectorStore, as_vector, open_store  # noqa: E402

from bench import store_postgres  # noqa: E402

GOAL_MS = 10.0
GOAL_SIZE = 100_000
FILTER = {"bucket": {"$eq": 3}}  # metadata bucket = i % 10: keeps 10 % of the rows

Vectors = NDArray[np.float32]
Ids = NDArray[np.int64]


@dataclass
class Method:
    label: str
    run: Callable[[Vectors], Ids]  # query vector -> row numbers of the top k, best first
    times: list[float] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)  # recall@k per query against exact
    check_recall: bool = True
    one_blas_thread: bool = False  # the block runs under threadpool_limits(1) (set once: it costs ~0.5 ms)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def top_k(scores: NDArray[np.float32], k: int) -> Ids:
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def row_numbers(ids: list[str]) -> Ids:
    return np.array([int(i[1:]) for i in ids], dtype=np.int64)


def make_data(n: int, args: argparse.Namespace) -> tuple[Vectors, Vectors]:
    """``n`` records and ``--queries`` query vectors. ``random``: i.i.d. Gaussian (the worst case
    for a graph index: every point is about as far as every other). ``lowrank``: Gaussian in a
    random ``--rank``-dimensional subspace plus 10 % noise, a stand-in for real embeddings, whose
    intrinsic dimension is far below 384."""
    rng = np.random.default_rng(args.seed + n)
    if args.data == "random":
        both = rng.standard_normal((n + args.queries, args.dim), dtype=np.float32)
    else:
        basis = rng.standard_normal((args.rank, args.dim), dtype=np.float32)
        latent = rng.standard_normal((n + args.queries, args.rank), dtype=np.float32)
        both = latent @ basis + 0.1 * np.sqrt(args.rank) * rng.standard_normal(
            (n + args.queries, args.dim), dtype=np.float32
        )
    both = both.astype(np.float32, copy=False)
    return np.ascontiguousarray(both[:n]), np.ascontiguousarray(both[n:])


def fill(store: VectorStore, data: Vectors, batch: int) -> float:
    """Upsert ``data`` as records r0..r{n-1} (metadata bucket, doc_id) in batches; records/s."""
    start = time.perf_counter()
    for lo in range(0, data.shape[0], batch):
        hi = min(data.shape[0], lo + batch)
        store.upsert([Record(f"r{i}", data[i], {"doc_id": f"doc-{i // 8}", "bucket": i % 10}) for i in range(lo, hi)])
    return data.shape[0] / (time.perf_counter() - start)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(
    n: int, args: argparse.Namespace, root: Path, pg_uri: str | None
) -> tuple[list[Method], dict[str, float]]:
    import faiss
    from threadpoolctl import threadpool_limits

    k = args.top_k
    data, queries = make_data(n, args)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    truth = [top_k(unit @ (q / np.linalg.norm(q)), k) for q in queries]
    costs: dict[str, float] = {}

    path = root / f"n{n}"
    writer = open_store(f"local://{path}")
    assert isinstance(writer, LocalStore)
    costs["upsert records/s"] = fill(writer, data, args.upsert_batch)
    writer.close()

    exact = open_store(f"local://{path}")
    hnsw = open_store(f"local://{path}?index=hnsw&ef_search={args.ef_search[0]}")
    assert isinstance(exact, LocalStore) and isinstance(hnsw, LocalStore)
    costs["first exact query (loads the matrix) s"] = timed(lambda: exact.query(queries[0], k))
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # the graph builds as the store builds it
    costs["first hnsw query (load + build) s"] = timed(lambda: hnsw.query(queries[0], k))
    faiss.omp_set_num_threads(args.faiss_threads)
    where = filters.parse(FILTER)
    costs["first filtered query s"] = timed(lambda: exact.query(queries[0], k, where))
    for q in queries[:5]:  # warm-up
        exact.query(q, k)
        hnsw.query(q, k)
        exact.query(q, k, where)

    # What the filter costs by itself: the store's own SQL, on a connection of our own.
    params: list[object] = [""]
    sql = f"SELECT rid FROM records r WHERE namespace = ? AND {filters.to_sql(where, params)}"
    own = sqlite3.connect(path / "store.sqlite3")
    bucket = np.arange(n, dtype=np.int64) % 10  # the metadata field as an in-memory column
    selected = np.flatnonzero(bucket == 3)
    ann = hnsw._matrices[""].ann  # the store's own graph, so ef_search can vary without a rebuild
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(unit)
    fp16 = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    fp16.add(unit)

    def numpy_exact(q: Vectors) -> Ids:
        return top_k(unit @ (q / np.linalg.norm(q)), k)

    # The proposed change to LocalStore: keep the matrix transposed, (dim, n) C-contiguous, so the
    # product is ``q @ vectors_t`` (OpenBLAS's sgemv_n kernel instead of sgemv_t); the rest of
    # the exact path (normalise, _top_k, _matches) is the store's own.
    loaded = exact._matrix("")
    vectors_t = np.ascontiguousarray(loaded.vectors.T)

    def store_transposed(q: Vectors) -> Ids:
        unit_q = as_vector(q) / max(float(np.linalg.norm(q)), 1e-12)
        scores = unit_q @ vectors_t
        best = _top_k(scores, k)
        return row_numbers([m.id for m in exact._matches("", loaded, best, scores[best])])

    unit_t = np.ascontiguousarray(unit.T)

    def numpy_transposed(q: Vectors) -> Ids:
        return top_k((q / np.linalg.norm(q)) @ unit_t, k)

    def faiss_search(index: object) -> Callable[[Vectors], Ids]:
        def run(q: Vectors) -> Ids:
            _, found = index.search((q / np.linalg.norm(q)).reshape(1, -1), k)  # type: ignore[attr-defined]
            return found[0].astype(np.int64)

        return run

    def store_hnsw(ef: int) -> Callable[[Vectors], Ids]:
        def run(q: Vectors) -> Ids:
            ann.hnsw.efSearch = ef
            return row_numbers([m.id for m in hnsw.query(q, k)])

        return run

    def sql_only(q: Vectors) -> Ids:
        own.execute(sql, params).fetchall()
        return np.zeros(0, dtype=np.int64)

    def in_memory_filter(q: Vectors) -> Ids:
        rows = np.flatnonzero(bucket == 3)
        return rows[top_k(unit[rows] @ (q / np.linalg.norm(q)), k)]

    methods = [
        Method("store exact (`LocalStore.query`)", lambda q: row_numbers([m.id for m in exact.query(q, k)])),
        Method(
            "store exact, 1 BLAS thread (`threadpool_limits`)",
            lambda q: row_numbers([m.id for m in exact.query(q, k)]),
            one_blas_thread=True,
        ),
        Method("store exact with the matrix transposed (proposed, replicated here)", store_transposed),
        *(Method(f"store `index=hnsw`, ef_search {ef}", store_hnsw(ef)) for ef in args.ef_search),
        Method("raw numpy matmul + argpartition (2 BLAS threads)", numpy_exact),
        Method("raw numpy, 1 BLAS thread", numpy_exact, one_blas_thread=True),
        Method("raw numpy, matrix transposed (`q @ X.T` on a (dim, n) copy)", numpy_transposed),
        Method("faiss `IndexFlatIP`", faiss_search(flat)),
        Method("faiss `IndexScalarQuantizer` fp16", faiss_search(fp16)),
        Method(
            f"store exact + filter `{FILTER}` (10 % of rows)",
            lambda q: row_numbers([m.id for m in exact.query(q, k, where)]),
            check_recall=False,
        ),
        Method("  of which: the filter's SQL alone", sql_only, check_recall=False),
        Method("  filter from an in-memory column + numpy (floor)", in_memory_filter, check_recall=False),
    ]
    pg = None
    if pg_uri:
        pg = store_postgres.PostgresBench(pg_uri, data, k, args.pg_ef_search, args.upsert_batch, FILTER, fill)
        pg.warm_up(queries)
        for label, plan in pg.plans(queries[0]).items():
            print(f"  n={n}: postgres plan, {label}: {plan}", flush=True)
        methods += [Method(label, run, check_recall=exact) for label, run, exact in pg.methods()]
    filtered_truth = [selected[top_k(unit[selected] @ (q / np.linalg.norm(q)), k)] for q in queries]
    block = max(1, args.queries // args.rounds)
    for lo in range(0, args.queries, block):
        for method in methods:
            limit = threadpool_limits(1, "blas") if method.one_blas_thread else contextlib.nullcontext()
            with limit:
                for i in range(lo, min(args.queries, lo + block)):
                    start = time.perf_counter()
                    found = method.run(queries[i])
                    method.times.append(time.perf_counter() - start)
                    expected = truth[i] if method.check_recall else filtered_truth[i]
                    if found.size:
                        method.hits.append(len(set(found.tolist()) & set(expected.tolist())) / k)
        print(f"  n={n}: {min(args.queries, lo + block)}/{args.queries} queries per method", flush=True)

    # A write moves the namespace's version: the next query reloads the whole matrix.
    exact.upsert([Record("extra", data[0], {"bucket": 0})])
    costs["first exact query after a 1-record upsert s"] = timed(lambda: exact.query(queries[0], k))
    own.close()
    exact.close()
    hnsw.close()
    if pg is not None:
        costs.update(pg.costs)
        pg.close()
    return methods, costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000", help="store sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per method and size")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ef-search", default="64,256", help="HNSW ef_search values; the first is the store's")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved blocks per method")
    parser.add_argument("--upsert-batch", type=int, default=1000, help="records per upsert call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=["random", "lowrank"], default="random", help="see make_data")
    parser.add_argument("--rank", type=int, default=32, help="subspace dimension for --data lowrank")
    parser.add_argument(
        "--faiss-threads", type=int, default=1, help="OpenMP threads for faiss (1: single queries gain nothing)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp store folder")
    parser.add_argument(
        "--postgres", default="auto", help="postgres:// URI to bench, auto (start one as the tests do) or off"
    )
    parser.add_argument(
        "--pg-ef-search", default="40,100", help="hnsw.ef_search values for postgres:// (store default 100)"
    )
    args = parser.parse_args()
    args.ef_search = [int(x) for x in args.ef_search.split(",")]
    args.pg_ef_search = [int(x) for x in args.pg_ef_search.split(",")]
    import faiss
    from threadpoolctl import threadpool_info

    faiss.omp_set_num_threads(args.faiss_threads)
    blas = ", ".join(f"{p['internal_api']} {p.get('version')} ({p['prefix']})" for p in threadpool_info())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, sqlite "
        f"{sqlite3.sqlite_version}\nthread pools: {blas}; faiss OpenMP threads {args.faiss_threads}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="ragraph-bench-store-"))
    results: list[tuple[int, list[Method], dict[str, float]]] = []
    stack = contextlib.ExitStack()
    postgres = contextlib.nullcontext(None) if args.postgres == "off" else store_postgres.server(args.postgres)
    try:
        pg_uri = stack.enter_context(postgres)
        if pg_uri:
            print(f"postgres: {store_postgres.server_version(pg_uri)}", flush=True)
        for n in [int(x) for x in args.sizes.split(",")]:
            started = time.perf_counter()
            methods, costs = bench_size(n, args, root, pg_uri)
            print(f"  n={n}: done in {time.perf_counter() - started:.0f} s", flush=True)
            results.append((n, methods, costs))
    finally:
        stack.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    for n, methods, _ in results:
        base = pct(methods[0].times, 0.5)
        print(f"\n{n} x {args.dim} float32 ({args.data}), top-{args.top_k}, {args.queries} queries per method:\n")
        print(
            f"| method | p50 ms | p95 ms | p99 ms | p50 vs store exact | recall@{args.top_k} |\n"
            "|---|---:|---:|---:|---:|---:|"
        )
        for m in methods:
            recall = f"{np.mean(m.hits):.3f}" if m.hits else ""
            p50, p95, p99 = pct(m.times, 0.5), pct(m.times, 0.95), pct(m.times, 0.99)
            print(f"| {m.label} | {p50 * 1e3:.2f} | {p95 * 1e3:.2f} | {p99 * 1e3:.2f} | {p50 / base:.2f} | {recall} |")
    print(
        "\n| size | upsert records/s | first exact query (matrix load) s | first hnsw query (load + build) s "
        "| first filtered query s | exact query after a 1-record upsert s |\n|---:|---:|---:|---:|---:|---:|"
    )
    for n, _, c in results:
        print(
            f"| {n} | {c['upsert records/s']:.0f} | {c['first exact query (loads the matrix) s']:.2f} "
            f"| {c['first hnsw query (load + build) s']:.2f} | {c['first filtered query s']:.2f} "
            f"| {c['first exact query after a 1-record upsert s']:.2f} |"
        )
    pg_costs = [
        "postgres upsert records/s",
        "postgres bulk load, then CREATE INDEX records/s",
        "postgres HNSW index MB",
        "postgres first query s",
    ]
    if any(pg_costs[0] in c for _, _, c in results):
        print(f"\n| size | {' | '.join(pg_costs)} |\n|---:|---:|---:|---:|---:|")
        for n, _, c in results:
            print(f"| {n} | {' | '.join(f'{c[name]:.3g}' for name in pg_costs)} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    for n, methods, _ in results:
        if n == GOAL_SIZE:
            p50 = pct(methods[0].times, 0.5) * 1e3
            verdict = "met" if p50 <= GOAL_MS else "NOT met"
            print(f"\ngoal: exact top-{args.top_k} at {n} p50 <= {GOAL_MS:g} ms: {p50:.2f} ms, {verdict}")


if __name__ == "__main__":
    main()
