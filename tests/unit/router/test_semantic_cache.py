"""The semantic cache (ragraph_router.cache) and its CACHE node: keys (same request -> same key,
any answer-changing parameter or the namespace -> another), the threshold, expiry and purging,
records round-tripped through a real embedded store, the graph checks, and the executor serving
a hit without calling the LLM (fake model clients, real store)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from ragraph_client.tensors import InferResponse, Tensor
from ragraph_retrieval import filters
from ragraph_retrieval.store import MAX_METADATA_BYTES, Record, VectorStore, open_store
from ragraph_router.cache import Entry, SemanticCache, Slot
from ragraph_router.events import DeltaEvent, Event, FinalEvent, RagRequest, SourcesEvent
from ragraph_router.executor import Executor
from ragraph_router.graph import Graph, GraphError, load, parse
from ragraph_router.prompt import Source
from ragraph_router.telemetry import RouterMetrics

DIM = 8
STORE = "local://STORE"

GRAPH = """
name: rag
nodes:
  - {name: encode, type: MODEL, endpoint: {url: "enc:1", model: encoder}, inputs: {text: request.question},
     children: [cache]}
  - name: cache
    type: CACHE
    endpoint: {store: "STORE_URI"}
    inputs: {vector: encode.embedding}
    parameters: {threshold: 0.9, ttl_s: 100}
    on_hit: combine
    children: [retrieve]
  - {name: retrieve, type: RETRIEVER, endpoint: {store: "STORE_URI"}, inputs: {vector: encode.embedding},
     children: [prompt]}
  - {name: prompt, type: COMBINER, combine: prompt, inputs: {question: request.question, matches: retrieve.matches},
     children: [generate]}
  - {name: generate, type: MODEL, endpoint: {url: "llm:1", model: llm}, inputs: {messages: prompt.messages},
     forward: [max_tokens, temperature, top_p, seed, stop], stream: true, children: [classify]}
  - {name: classify, type: MODEL, endpoint: {url: "enc:1", model: classifier}, inputs: {text: generate.text},
     on_error: skip, children: [combine]}
  - name: combine
    type: COMBINER
    combine: answer
    inputs: {answer: [generate.text, cache.answer], sources: [prompt.sources, cache.sources],
             label: [classify.label, cache.label]}
"""


def _graph(uri: str = STORE, text: str = GRAPH) -> Graph:
    return parse(text.replace("STORE_URI", uri))


def _unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def _at_cosine(base: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector whose cosine with ``base`` (a unit vector along axis 0) is ``cos``."""
    return _unit(cos, math.sqrt(1 - cos * cos))


E1 = _unit(1.0)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[VectorStore]:
    with open_store(f"local://{tmp_path}/cache") as s:
        yield s


@pytest.fixture()
def cache(store: VectorStore) -> SemanticCache:
    graph = _graph(store.uri)
    return SemanticCache(graph, graph.node("cache"), store)


def _entry(question: str = "How long are backups kept?", answer: str = "Twelve months [1].") -> Entry:
    sources = [Source(1, "ops/backup.md", 3, 0.8123, "text not kept"), Source(2, "ops/dr.md", 0, 0.7, "")]
    return Entry(question, answer, sources, label="answered", finish_reason="stop")


BASE = {"max_tokens": 64, "temperature": 0.0}


# --- keys ------------------------------------------------------------------------------------


def test_same_request_same_key(cache: SemanticCache) -> None:
    where = filters.parse({"team": "ops"})
    assert cache.key("t1", dict(BASE), 4, where) == cache.key("t1", dict(BASE), 4, filters.parse({"team": "ops"}))
    assert cache.key(None, {"temperature": 0.0, "max_tokens": 64}) == cache.key(None, BASE)  # order does not count


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("max_tokens", 65),
        ("temperature", 0.7),
        ("top_p", 0.9),
        ("seed", 7),
        ("stop", "\n\n"),
        ("top_k", 8),
        ("filter", filters.parse({"team": "ops"})),
        ("namespace", "tenant-b"),
    ],
)
def test_any_answer_changing_parameter_changes_the_key(cache: SemanticCache, change: str, value: Any) -> None:
    args: dict[str, Any] = {"namespace": "tenant-a", "params": dict(BASE), "top_k": None, "filter": None}
    before = cache.key(**args)
    if change in args:
        args[change] = value
    else:
        args["params"] = {**BASE, change: value}
    assert cache.key(**args) != before


def test_a_parameter_no_node_receives_is_not_in_the_key(cache: SemanticCache) -> None:
    assert "top_k_tokens" not in cache.forwarded  # rag_io passes it on; this graph forwards it to no node
    assert cache.key(None, {**BASE, "top_k_tokens": 5}) == cache.key(None, BASE)


def test_numbers_have_one_spelling(cache: SemanticCache) -> None:
    # V2 parameters carry 0.5 as a double or as "0.5" (MLServer's floats), 64 as int64 or double
    assert cache.key(None, {"max_tokens": 64, "temperature": 0.5}) == cache.key(
        None, {"max_tokens": 64.0, "temperature": "0.5"}
    )
    assert cache.key(None, {"stop": "0.5"}) != cache.key(None, {"stop": 0.5})  # stop is text, not a number
    assert cache.key(None, {"temperature": "warm"}) != cache.key(None, {"temperature": 0.5})


def test_namespace_separates_tenants(cache: SemanticCache) -> None:
    assert cache.key("a", BASE) != cache.key("b", BASE) != cache.key(None, BASE)
    assert cache.namespace(None) == cache.namespace("") == "__cache__"
    assert cache.namespace("tenant-a") == "__cache__:tenant-a"


def test_graph_identity_is_in_the_key(store: VectorStore) -> None:
    def key(text: str) -> str:
        graph = _graph(store.uri, text)
        return SemanticCache(graph, graph.node("cache"), store).key(None, BASE)

    base = key(GRAPH)
    assert key(GRAPH.replace("model: llm}", "model: llm-13b}")) != base  # another model
    assert key(GRAPH.replace('url: "llm:1"', 'url: "llm:2"')) != base  # another server
    assert key(GRAPH.replace("combine: prompt,", "combine: prompt, parameters: {budget_tokens: 99},")) != base
    assert key(GRAPH.replace("ttl_s: 100", "ttl_s: 5, version: v2")) != base  # version bumps every key
    # what is served, not what is stored: threshold and TTL leave the key alone
    assert key(GRAPH.replace("threshold: 0.9, ttl_s: 100", "threshold: 0.99, ttl_s: 5")) == base


# --- lookups, threshold, round trip ------------------------------------------------------------


def test_round_trip_through_the_local_store(cache: SemanticCache, store: VectorStore) -> None:
    key, entry = cache.key(None, BASE), _entry()
    assert cache.lookup(E1, key, "__cache__").result == "miss"
    assert cache.put(E1, key, "__cache__", entry)
    found = cache.lookup(E1, key, "__cache__")
    assert found.result == "hit" and found.score == pytest.approx(1.0, abs=1e-5)
    assert found.entry is not None
    got = found.entry
    assert (got.question, got.answer, got.label, got.finish_reason) == (
        entry.question,
        entry.answer,
        "answered",
        "stop",
    )
    assert [s.as_json() for s in got.sources] == [s.as_json() for s in entry.sources]
    record = store.fetch([cache.record_id(key, entry.question)], "__cache__")
    (meta,) = [r.metadata for r in record.values()]
    assert meta["key"] == key and meta["expires_at"] == pytest.approx(meta["created_at"] + 100)


def test_threshold_is_cosine_at_least(cache: SemanticCache) -> None:
    key = cache.key(None, BASE)
    cache.put(E1, key, "__cache__", _entry())
    assert cache.params.threshold == 0.9
    assert cache.lookup(_at_cosine(E1, 0.905), key, "__cache__").result == "hit"
    below = cache.lookup(_at_cosine(E1, 0.895), key, "__cache__")
    assert below.result == "miss" and below.score == pytest.approx(0.895, abs=1e-4)


def test_a_crowd_of_near_duplicates_under_other_keys_falls_back_to_the_filtered_query(
    cache: SemanticCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows at or above the threshold than a lookup reads: the store filters instead, and
    the same-key answer behind them is found (fresh, or expired behind fresh ones)."""
    import ragraph_router.cache as module

    monkeypatch.setattr(module, "CANDIDATES", 3)
    for seed in range(4):  # identical vectors, other keys (another seed each)
        cache.put(E1, cache.key(None, {"seed": seed}), "__cache__", _entry(f"q{seed}"), now=1000.0)
    key = cache.key(None, BASE)
    cache.put(_at_cosine(E1, 0.95), key, "__cache__", _entry("mine", "the answer"), now=1000.0)
    found = cache.lookup(E1, key, "__cache__", now=1001.0)
    assert found.result == "hit" and found.entry is not None and found.entry.answer == "the answer"
    assert found.score == pytest.approx(0.95, abs=1e-4)
    assert cache.lookup(E1, key, "__cache__", now=1200.0).result == "expired"
    monkeypatch.setattr(module, "CANDIDATES", 32)  # the same decisions without the fallback
    cache.put(_at_cosine(E1, 0.95), key, "__cache__", _entry("mine", "the answer"), now=1000.0)
    assert cache.lookup(E1, key, "__cache__", now=1001.0).result == "hit"
    assert cache.lookup(E1, key, "__cache__", now=1200.0).result == "expired"


def test_another_key_or_namespace_is_never_served(cache: SemanticCache) -> None:
    cache.put(E1, cache.key("a", BASE), cache.namespace("a"), _entry())
    assert cache.lookup(E1, cache.key("a", BASE), cache.namespace("a")).result == "hit"
    assert cache.lookup(E1, cache.key("a", {**BASE, "temperature": 1.0}), cache.namespace("a")).result == "miss"
    assert cache.lookup(E1, cache.key("b", BASE), cache.namespace("b")).result == "miss"
    assert cache.lookup(E1, cache.key("a", BASE), cache.namespace("b")).result == "miss"  # other store namespace


def test_asking_again_overwrites_one_record(cache: SemanticCache, store: VectorStore) -> None:
    key = cache.key(None, BASE)
    cache.put(E1, key, "__cache__", _entry(answer="first"), now=1000.0)
    cache.put(E1, key, "__cache__", _entry(answer="second"), now=2000.0)
    assert store.stats().namespaces == {"__cache__": 1}
    found = cache.lookup(E1, key, "__cache__", now=2001.0)
    assert found.entry is not None and found.entry.answer == "second"


def test_too_large_an_answer_is_not_stored(cache: SemanticCache, store: VectorStore) -> None:
    assert not cache.put(E1, cache.key(None, BASE), "__cache__", _entry(answer="x" * MAX_METADATA_BYTES))
    assert store.stats().total == 0


# --- expiry ------------------------------------------------------------------------------------


def test_expired_answers_are_not_served_and_are_deleted(cache: SemanticCache, store: VectorStore) -> None:
    key = cache.key(None, BASE)
    cache.put(E1, key, "__cache__", _entry(), now=1000.0)  # ttl_s 100: expires at 1100
    assert cache.lookup(E1, key, "__cache__", now=1099.0).result == "hit"
    expired = cache.lookup(E1, key, "__cache__", now=1100.0)
    assert expired.result == "expired" and expired.entry is None
    assert store.fetch([cache.record_id(key, _entry().question)], "__cache__") == {}
    assert cache.lookup(E1, key, "__cache__", now=1100.0).result == "miss"


def test_the_query_filters_on_expiry(cache: SemanticCache, store: VectorStore) -> None:
    """An expired near-duplicate closer than a fresh one does not hide the fresh one."""
    key = cache.key(None, BASE)
    cache.put(E1, key, "__cache__", _entry("old question", "old"), now=0.0)  # expired at 100
    cache.put(_at_cosine(E1, 0.95), key, "__cache__", _entry("new question", "new"), now=1000.0)
    found = cache.lookup(E1, key, "__cache__", now=1001.0)
    assert found.result == "hit" and found.entry is not None and found.entry.answer == "new"
    assert found.score == pytest.approx(0.95, abs=1e-4)


def test_purge_sweeps_expired_rows_of_every_key(cache: SemanticCache, store: VectorStore) -> None:
    for i in range(5):  # 10 s apart: no write sweeps after the first (ttl_s 100, expiries 1100 ... 1140)
        cache.put(_unit(1.0, i), cache.key(None, {"seed": i}), "__cache__", _entry(f"q{i}"), now=1000.0 + 10 * i)
    assert cache.purge(_unit(0.0, 1.0), "__cache__", now=1115.0) == 2  # any vector: the filter selects
    assert store.stats().namespaces == {"__cache__": 3}


def test_writes_purge_at_most_once_a_while(cache: SemanticCache, store: VectorStore) -> None:
    """ttl_s 100: a write sweeps the namespace when the last sweep is 60 s old or more."""

    def put(seed: int, now: float) -> int:
        cache.put(E1, cache.key(None, {"seed": seed}), "__cache__", _entry(f"q{seed}"), now=now)
        return store.stats().namespaces["__cache__"]

    assert put(1, 1000.0) == 1  # swept (the first write); expires at 1100
    assert put(2, 1050.0) == 2  # no sweep: 50 s since the last; expires at 1150
    assert put(3, 1105.0) == 2  # swept: 1 had expired
    assert put(4, 1155.0) == 3  # no sweep (50 s): 2 expired at 1150 but stays until the next one


# --- the graph spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('endpoint: {store: "STORE_URI"}\n    inputs: {vector', "inputs: {vector", "CACHE nodes need endpoint.store"),
        (
            "inputs: {vector: encode.embedding}\n    parameters",
            "inputs: {vec: encode.embedding}\n    parameters",
            "inputs: {vector: <node>.embedding}",
        ),
        ("on_hit: combine", "on_hit: nowhere", "child/route 'nowhere' is not a node"),
        ("    on_hit: combine\n", "", "CACHE nodes need on_hit"),
        ("threshold: 0.9", "threshold: 1.5", "parameters.threshold: Input should be less than or equal to 1"),
        ("threshold: 0.9", "threshold: 0", "parameters.threshold"),
        ("ttl_s: 100", "ttl_s: -1", "parameters.ttl_s: Input should be greater than 0"),
        ("ttl_s: 100", "ttl_s: 100, size: 3", "parameters.size: Extra inputs are not permitted"),
        (
            "answer: [generate.text, cache.answer]",
            "answer: generate.text",
            "no combine: answer node reads cache.answer",
        ),
        ("children: [prompt]}", "children: [prompt], on_hit: combine}", "on_hit is only for CACHE nodes"),
        (
            "on_error: skip, children: [combine]}",
            "on_error: skip, children: [combine]}\n"
            "  - {name: cache2, type: CACHE, endpoint: {store: x}, inputs: {vector: encode.embedding}, "
            "on_hit: combine}",
            "at most one CACHE node",
        ),
    ],
)
def test_graph_rejects_a_bad_cache_node_naming_node_and_field(old: str, new: str, needle: str) -> None:
    assert old in GRAPH
    with pytest.raises(GraphError) as info:
        _graph(text=GRAPH.replace(old, new))
    assert needle in str(info.value)
    if "at most one" not in needle:
        assert "node 'cache'" in str(info.value) or "node 'retrieve'" in str(info.value)


def test_cache_node_walks_both_ways_and_may_retry() -> None:
    graph = _graph(text=GRAPH.replace("on_hit: combine", "on_hit: combine\n    retries: 2"))
    assert graph.next_nodes(graph.node("cache")) == ["retrieve", "combine"]


def test_shipped_graphs() -> None:
    """rag is unchanged (no cache); rag-cached is rag plus the cache node and its wiring."""
    plain, cached = load(), load("rag-cached")
    assert all(n.type != "CACHE" for n in plain.nodes)
    node = cached.node("cache")
    assert node.type == "CACHE" and node.on_hit == "combine" and node.children == ["retrieve"]
    assert node.parameters == {"threshold": 0.95, "ttl_s": 3600, "namespace": "__cache__"}
    assert cached.node("encode").children == ["cache"]
    rewired = {"cache", "encode", "combine"}
    same = [n.model_dump() for n in plain.nodes if n.name not in rewired]
    assert same == [n.model_dump() for n in cached.nodes if n.name not in rewired]


def test_shipped_cached_graph_reads_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGRAPH_CACHE_THRESHOLD", "0.9")
    monkeypatch.setenv("RAGRAPH_CACHE_TTL_S", "60")
    monkeypatch.setenv("RAGRAPH_CACHE_STORE", "local://elsewhere")
    node = load("rag-cached").node("cache")
    assert node.parameters["threshold"] == 0.9 and node.parameters["ttl_s"] == 60
    assert node.endpoint is not None and node.endpoint.store == "local://elsewhere"
    with pytest.raises(GraphError, match="shipped graphs, by name: rag, rag-cached"):
        load("rag-cachd")


# --- the executor: a hit skips the rest of the graph -------------------------------------------

QUESTIONS = {
    "How long do we keep backups?": E1,
    "For how long are backups kept?": _at_cosine(E1, 0.93),  # a paraphrase, above 0.9
    "What is the capital of France?": _at_cosine(E1, 0.5),
}


class FakeEncoder:
    """encoder: a fixed vector per question; classifier: label 'answered' (or a failure)."""

    def __init__(self) -> None:
        self.fail_classifier = False

    async def infer(self, model: str, inputs: dict, params: dict, **kw: Any) -> InferResponse:
        text = inputs["text"][0]
        if model == "encoder":
            return InferResponse(model, [Tensor.from_numpy("embedding", QUESTIONS[text].reshape(1, -1))])
        if self.fail_classifier:
            from ragraph_client.errors import Unavailable

            raise Unavailable("classifier down")
        score = Tensor.from_numpy("score", np.array([0.9], dtype=np.float32))
        return InferResponse(model, [Tensor.from_strings("label", ["answered"]), score])


class FakeLLM:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.finish_reason = "stop"

    def stream(self, model: str, inputs: dict, params: dict, **kw: Any) -> AsyncIterator[InferResponse]:
        self.calls.append(dict(params))
        answer = f"Answer {len(self.calls)} [1]."

        async def replies() -> AsyncIterator[InferResponse]:
            for word in answer.split(" "):
                yield InferResponse(model, [Tensor.from_strings("text", [word + " "])])
            done = {"finish_reason": self.finish_reason, "completion_tokens": 3, "prompt_tokens": 20}
            yield InferResponse(model, [], done)

        return replies()


class WordCounter:
    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


class Rig:
    def __init__(self, tmp_path: Path, text: str = GRAPH) -> None:
        uri = f"local://{tmp_path}/store"
        self.store = open_store(uri)
        doc = {"doc_id": "ops/backup.md", "chunk": 0, "text": "Backups are kept for twelve months."}
        self.store.upsert([Record("ops/backup.md#0", E1, doc)])
        self.graph = _graph(uri, text)
        self.encoder, self.llm = FakeEncoder(), FakeLLM()
        self.metrics = RouterMetrics(CollectorRegistry())
        clients: Any = {"enc:1": self.encoder, "llm:1": self.llm}
        self.executor = Executor(self.graph, clients, {uri: self.store}, WordCounter(), self.metrics)

    def ask(self, question: str, **params: Any) -> list[Event]:
        async def go() -> list[Event]:
            request = RagRequest(question, params={**BASE, **params}, id="r1")
            events = [e async for e in self.executor.run(request, time.monotonic() + 30)]
            await self.executor.settle()
            return events

        return asyncio.run(go())

    def count(self, result: str) -> float:
        return self.metrics.registry.get_sample_value("ragraph_router_cache_total", {"result": result}) or 0.0

    def stored(self) -> int:
        return self.store.stats().namespaces.get("__cache__", 0)


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.store.close()


def _final(events: list[Event]) -> FinalEvent:
    assert isinstance(events[-1], FinalEvent)
    return events[-1]


def test_miss_then_hit_on_a_paraphrase_without_the_llm(rig: Rig) -> None:
    first = rig.ask("How long do we keep backups?")
    miss = _final(first)
    assert miss.parameters["cached"] is False and "cache_score" not in miss.parameters
    assert len(rig.llm.calls) == 1 and rig.stored() == 1 and rig.count("miss") == 1

    events = rig.ask("For how long are backups kept?")
    hit = _final(events)
    assert len(rig.llm.calls) == 1  # no LLM call
    assert hit.parameters["cached"] is True and hit.parameters["cache_score"] == pytest.approx(0.93, abs=1e-3)
    assert (hit.answer, hit.label) == (miss.answer, miss.label) == ("Answer 1 [1]. ", "answered")
    assert [s.as_json() for s in hit.sources] == [s.as_json() for s in miss.sources] != []
    assert hit.parameters["finish_reason"] == "stop" and hit.parameters["completion_tokens"] == 0
    # a stream sees sources -> text -> final, as on a miss
    assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, FinalEvent]
    assert isinstance(events[1], DeltaEvent) and events[1].text == miss.answer
    assert list(json.loads(hit.parameters["nodes"])) == ["encode", "cache", "combine"]
    assert rig.count("hit") == 1 and rig.stored() == 1  # a hit writes nothing


def test_below_threshold_or_other_params_miss(rig: Rig) -> None:
    rig.ask("How long do we keep backups?")
    assert _final(rig.ask("What is the capital of France?")).parameters["cached"] is False
    assert _final(rig.ask("How long do we keep backups?", temperature=0.8)).parameters["cached"] is False
    assert _final(rig.ask("How long do we keep backups?", max_tokens=32)).parameters["cached"] is False
    assert len(rig.llm.calls) == 4 and rig.count("miss") == 4
    again = _final(rig.ask("How long do we keep backups?", max_tokens=32))
    assert again.parameters["cached"] is True and again.parameters["cache_score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("finish_reason", ["guarded", "cancelled", ""])
def test_unfinished_answers_are_not_stored(rig: Rig, finish_reason: str) -> None:
    rig.llm.finish_reason = finish_reason
    rig.ask("How long do we keep backups?")
    assert rig.stored() == 0


def test_flagged_answers_are_not_stored(rig: Rig) -> None:
    rig.encoder.fail_classifier = True  # classify: on_error skip -> flagged
    final = _final(rig.ask("How long do we keep backups?"))
    assert final.parameters["flagged"] is True and rig.stored() == 0


def test_length_finished_answers_are_stored(rig: Rig) -> None:
    rig.llm.finish_reason = "length"  # max_tokens is in the key: the same cut answer comes again
    rig.ask("How long do we keep backups?")
    assert rig.stored() == 1
    hit = _final(rig.ask("How long do we keep backups?"))
    assert hit.parameters["cached"] is True and hit.parameters["finish_reason"] == "length"


def test_a_broken_cache_store_fails_by_the_nodes_policy(tmp_path: Path) -> None:
    """on_error: skip on the cache node: the answer is still made, flagged, and not stored."""
    rig = Rig(tmp_path, GRAPH.replace("on_hit: combine", "on_hit: combine\n    on_error: skip"))
    assert rig.executor.cache is not None
    rig.executor.cache.store = _Broken()  # type: ignore[assignment]
    final = _final(rig.ask("How long do we keep backups?"))
    nodes = json.loads(final.parameters["nodes"])
    assert final.answer and final.parameters["cached"] is False and final.parameters["flagged"] is True
    assert nodes["cache"]["status"] == "skipped" and "UNAVAILABLE: cache store" in nodes["cache"]["error"]
    assert rig.count("error") == 1


class _Broken:
    uri = "local://broken"

    def query(self, *a: Any, **k: Any) -> Any:
        import sqlite3

        raise sqlite3.OperationalError("disk I/O error")


def test_slot_is_what_a_miss_leaves(cache: SemanticCache) -> None:
    slot = Slot(cache.key(None, BASE), "__cache__", E1)
    cache.save(slot, _entry())
    assert cache.lookup(E1, slot.key, slot.namespace).result == "hit"
