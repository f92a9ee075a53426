"""The rag model's request parameters (read before any node is called) and the graph's
``forward:`` map (request name -> the node's name)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_router import graph, parameters
from ragraph_router.events import RagRequest
from ragraph_router.handlers import node_params
from ragraph_router.nodes import ModelNode

SHIPPED = graph.load()
FORWARDED = sorted({name for node in SHIPPED.of(ModelNode) for name in node.forward})
TAKES = (
    "debug, filter, max_tokens, namespace, no_repeat_ngram_size, repetition_penalty, seed, stop, temperature, "
    "top_k, top_k_tokens, top_p"
)


def read(params: dict[str, Any]) -> parameters.Parameters:
    return parameters.read(params, FORWARDED, 50)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": -1}, "parameter 'max_tokens' must be an integer from 1 to 2**63-1, got -1"),
        (
            {"max_tokens": 2**64 - 1},
            "parameter 'max_tokens' must be an integer from 1 to 2**63-1, got 18446744073709551615",
        ),
        ({"max_tokens": 2.5}, "parameter 'max_tokens' must be an integer, got 2.5"),
        ({"temperature": -0.5}, "parameter 'temperature' must be a finite number >= 0, got -0.5"),
        ({"temperature": "inf"}, "parameter 'temperature' must be a finite number >= 0, got 'inf'"),
        ({"top_p": 5}, "parameter 'top_p' must be a finite number in (0, 1], got 5"),
        ({"top_p": 0.0}, "parameter 'top_p' must be a finite number in (0, 1], got 0.0"),
        ({"top_k_tokens": -1}, "parameter 'top_k_tokens' must be an integer from 0 to 2**63-1, got -1"),
        ({"seed": -3}, "parameter 'seed' must be an integer from 0 to 2**63-1, got -3"),
        ({"stop": "[1]"}, "parameter 'stop' must be JSON: a string or a list of strings"),
        ({"stop": '["a", ""]'}, "parameter 'stop' holds an empty string"),
        ({"stop": json.dumps(["s"] * 17)}, "parameter 'stop' holds 17 strings, more than the limit of 16"),
        ({"stop": "[" * 100 + "]" * 100}, "parameter 'stop' is nested deeper than 32 levels (at ...[0][0][0]"),
        (
            {"stop": '["\\ud800"]'},
            "parameter 'stop' at [0]: string holds a lone UTF-16 surrogate ('\\ud800' at character 0)",
        ),
        ({"repetition_penalty": 0}, "parameter 'repetition_penalty' must be a finite number in (0, 10], got 0"),
        ({"no_repeat_ngram_size": 65}, "parameter 'no_repeat_ngram_size' must be an integer from 0 to 64, got 65"),
        ({"top_k": 0}, "parameter 'top_k' must be between 1 and 50, got 0"),
        ({"debug": "maybe"}, "parameter 'debug' must be a boolean, got 'maybe'"),
        ({"namespace": "n" * 513}, "parameter 'namespace' is longer than 512 characters"),
        ({"filter": 3}, "parameter 'filter' must be a JSON string"),
        ({"content_type": "np"}, "parameter 'content_type': the rag model's input is text ('str'), got 'np'"),
        ({"foo": 1}, f"unknown parameter 'foo': the rag model takes {TAKES}"),
        ({"sequence_id": 7}, f"unknown parameter 'sequence_id': the rag model takes {TAKES}"),
        ({"max_token": 8}, f"unknown parameter 'max_token': the rag model takes {TAKES}"),
    ],
)
def test_bad_parameters_are_refused_naming_them(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        read(params)
    assert info.value.message.startswith(message)


def test_values_go_on_normalised() -> None:
    got = read(
        {
            "max_tokens": "12",
            "temperature": "0",
            "top_p": 0.5,
            "top_k_tokens": 40,
            "seed": 7,
            "stop": '"END"',
            "repetition_penalty": "1.3",
            "no_repeat_ngram_size": 3.0,
            "top_k": 3,
            "namespace": "ns",
            "debug": "true",
            "filter": '{"doc_id": "a.md"}',
            "triton_enable_empty_final_response": True,
            "binary_data_output": False,
        }
    )
    assert got.forwarded == {
        "max_tokens": 12,
        "temperature": 0.0,
        "top_p": 0.5,
        "top_k_tokens": 40,
        "seed": 7,
        "stop": '["END"]',
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
    }
    assert (got.top_k, got.namespace, got.debug) == (3, "ns", True)
    assert got.filter is not None and got.filter.field == "doc_id"  # type: ignore[union-attr]


def test_a_graph_takes_only_what_it_forwards() -> None:
    with pytest.raises(InvalidArgument) as info:
        parameters.read({"top_p": 0.5}, ["max_tokens"], 50)
    assert (
        info.value.message
        == "unknown parameter 'top_p': the rag model takes debug, filter, max_tokens, namespace, top_k"
    )
    # a name the router has no rule for goes on as it came (the node checks it)
    assert parameters.read({"beam": "x"}, ["beam"], 50).forwarded == {"beam": "x"}


def test_shipped_graphs_forward_every_llm_parameter() -> None:
    for name in graph.shipped():
        generate = graph.load(name).node("generate")
        assert generate.forward == {
            "max_tokens": "max_tokens",
            "temperature": "temperature",
            "top_p": "top_p",
            "top_k_tokens": "top_k",
            "seed": "seed",
            "stop": "stop",
            "repetition_penalty": "repetition_penalty",
            "no_repeat_ngram_size": "no_repeat_ngram_size",
        }
        assert set(generate.forward) == set(parameters.CHECKS)


GRAPH = """
name: g
nodes:
  - {{name: generate, type: MODEL, endpoint: {{url: "127.0.0.1:1", model: llm}}, inputs: {{prompt: request.question}},
     forward: {forward}, parameters: {{max_tokens: 5}}}}
"""


def test_forward_takes_a_list_a_map_or_both() -> None:
    as_list = graph.parse(GRAPH.format(forward="[max_tokens, temperature]")).node("generate")
    assert as_list.forward == {"max_tokens": "max_tokens", "temperature": "temperature"}
    mixed = graph.parse(GRAPH.format(forward="[max_tokens, {top_k_tokens: top_k}]")).node("generate")
    assert mixed.forward == {"max_tokens": "max_tokens", "top_k_tokens": "top_k"}
    as_map = graph.parse(GRAPH.format(forward="{top_k_tokens: top_k}")).node("generate")
    assert as_map.forward == {"top_k_tokens": "top_k"}


@pytest.mark.parametrize(
    ("forward", "needle"),
    [
        ("[seed, seed]", "request parameter 'seed' is forwarded twice"),
        ("{top_k_tokens: top_k, k: top_k}", "forward: more than one request parameter goes to 'top_k'"),
        ("{a: [b]}", "nodes.0.forward"),
    ],
)
def test_bad_forward_maps_are_graph_errors(forward: str, needle: str) -> None:
    with pytest.raises(graph.GraphError) as info:
        graph.parse(GRAPH.format(forward=forward))
    assert needle in info.value.message


def test_forward_on_other_node_types_is_a_graph_error() -> None:
    text = "nodes:\n  - {name: c, type: COMBINER, combine: answer, forward: [max_tokens]}\n"
    with pytest.raises(graph.GraphError, match="forward is only for MODEL nodes"):
        graph.parse(text)


def test_the_node_gets_its_own_names() -> None:
    g = graph.parse(GRAPH.format(forward="{max_tokens: max_tokens, top_k_tokens: top_k}"))
    generate = g.node("generate")
    assert isinstance(generate, ModelNode)
    request = RagRequest("q", params={"top_k_tokens": 40, "max_tokens": 9})
    assert node_params(generate, request) == {"max_tokens": 9, "top_k": 40}
    assert node_params(generate, RagRequest("q")) == {"max_tokens": 5}  # the node's own default
