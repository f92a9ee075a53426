"""The graph's typed nodes (ragraph_router.nodes): one model per ``type``, each taking only its
own fields; error places as a graph file names them (``nodes.<i>.<field>``); the walk's one
successor function; and cache keys that do not move with the node models' shape."""

from __future__ import annotations

import pytest
from ragraph_router.cache_keys import graph_identity
from ragraph_router.graph import GraphError, load, parse
from ragraph_router.nodes import CacheNode, CombinerNode, ModelNode, RetrieverNode, RouterNode
from ragraph_router.values import Values

HEAD = "name: g\nnodes:\n"
MODEL = '  - {name: m, type: MODEL, endpoint: {url: "h:1", model: x}, inputs: {text: request.question}'


def _error(text: str) -> str:
    with pytest.raises(GraphError) as info:
        parse(text, "src")
    return info.value.message


def test_each_type_reads_into_its_own_model() -> None:
    graph = load("rag-cached")
    kinds = {n.name: type(n) for n in graph.nodes}
    assert kinds["guard"] is ModelNode and kinds["switch"] is RouterNode and kinds["refuse"] is CombinerNode
    assert kinds["retrieve"] is RetrieverNode and kinds["cache"] is CacheNode
    assert graph.generator is graph.node("generate") and graph.cache is graph.node("cache")
    assert [n.name for n in graph.of(RetrieverNode)] == ["retrieve"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("conditions", "[]"), ("combine", "prompt"), ("default_route", "m"), ("bogus", "1")],
)
def test_a_field_of_another_type_is_an_unknown_field(field: str, value: str) -> None:
    assert _error(f"{HEAD}{MODEL}, {field}: {value}}}\n") == f"src: nodes.0.{field}: Extra inputs are not permitted"


def test_router_and_combiner_take_no_endpoint() -> None:
    text = f"{HEAD}  - {{name: c, type: COMBINER, combine: answer, endpoint: {{store: x}}}}\n"
    assert _error(text) == "src: nodes.0.endpoint: Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (f"{MODEL}, retries: 9}}", "src: nodes.0.retries: Input should be less than or equal to 5"),
        (f"{MODEL}, stream_style: grpc}}", "src: nodes.0.stream_style: Input should be 'triton' or 'mlserver'"),
        (
            "  - {name: m, type: FOO}",
            "src: nodes.0.type: Input should be 'MODEL', 'RETRIEVER', 'ROUTER', 'COMBINER' or 'CACHE'",
        ),
        ("  - {name: m}", "src: nodes.0.type: Field required"),
        ("  - {type: FOO}", "src: nodes.0.name: Field required"),
        ("  - just a name", "src: nodes.0: Input should be a valid dictionary or instance of Node"),
    ],
)
def test_error_places_name_the_field_whatever_the_type(node: str, message: str) -> None:
    assert _error(f"{HEAD}{node}\n") == message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("stream: true", "graph g, node 'c': only MODEL nodes stream"),
        ('output_guard: {url: "h:1", block_labels: [x]}', "output_guard needs a streaming node (stream: true)"),
        ("forward: [max_tokens]", "graph g, node 'c': forward is only for MODEL nodes"),
        ("on_hit: c", "graph g, node 'c': on_hit is only for CACHE nodes"),
    ],
)
def test_misplaced_fields_keep_their_own_messages(extra: str, message: str) -> None:
    assert message in _error(f"{HEAD}  - {{name: c, type: COMBINER, combine: answer, {extra}}}\n")


def test_falsy_misplaced_fields_are_let_through_as_before() -> None:
    graph = parse(f"{HEAD}  - {{name: c, type: COMBINER, combine: answer, stream: false, forward: [], on_hit: null}}\n")
    assert graph.generator is None and not graph.node("c").stream


def test_one_successor_function_for_the_checks_and_the_walk() -> None:
    graph = load("rag-cached")
    switch, cache = graph.node("switch"), graph.node("cache")
    assert graph.next_nodes(switch) == ["refuse", "encode"]  # every route
    assert graph.next_nodes(cache) == ["retrieve", "combine"]
    values = Values.for_request("q", {})
    values.put_outputs("guard", {"label": "prompt_injection", "score": 0.9})
    assert graph.next_nodes(switch, values) == ["refuse"]  # the one this run takes
    values.put_lookup("cache", False, None)
    assert graph.next_nodes(cache, values) == ["retrieve"]
    values.put_lookup("cache", True, 0.99)
    assert graph.next_nodes(cache, values) == ["combine"]


def test_cache_keys_do_not_move_with_the_node_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph part of every cache key, as it was when all types shared one node model: a
    different digest would drop every cached answer on upgrade."""
    for name in ("RAGRAPH_ENCODER_URL", "RAGRAPH_CACHE_STORE", "RAGRAPH_CACHE_THRESHOLD", "RAGRAPH_CACHE_TTL_S"):
        monkeypatch.delenv(name, raising=False)
    for name in ("RAGRAPH_STORE", "RAGRAPH_LLM_URL"):
        monkeypatch.delenv(name, raising=False)
    graph = load("rag-cached")
    cache = graph.cache
    assert cache is not None
    assert graph_identity(graph, cache) == "397a4186d1d0c44a93861bce6d09c77848739314f3da9390db075b5c1a683c8d"
