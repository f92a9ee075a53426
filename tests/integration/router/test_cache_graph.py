"""The semantic cache as real processes: the shipped ``rag-cached`` graph run by router
subprocesses over the real encoder, the tiny LLM and a store ingested through the encoder.

The paraphrase's cosine to the question is measured with the encoder itself; one router serves
hits from just below it and one from just above it. The routers share one cache store (its
threshold and TTL decide what a router serves, not what is stored under a key), so an answer
one of them stored is there for the others. Whether the LLM ran is read off its own
``ragraph_llm_generated_tokens`` counter."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ragraph_client.client import InferenceClient
from ragraph_client.tensors import InferResponse
from ragraph_retrieval.store import open_store

from tests.fixtures.servers import Service, start_router, wait_for

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
PARAPHRASE = "How many months are the first-of-month copies of the ledger database kept for?"
PARAMS: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0}
MARGIN = 0.002  # the routers' thresholds sit this far below and above the measured cosine
TTL_S = 2.0


@dataclass
class Rig:
    llm: Service
    below: Service  # threshold just below cos(question, paraphrase): the paraphrase hits
    above: Service  # threshold just above it: the paraphrase misses
    short: Service  # default threshold, ttl_s 2
    cache_uri: str
    cosine: float

    def tokens(self) -> float:
        return self.llm.metric("ragraph_llm_generated_tokens_total")

    def settled_tokens(self) -> float:
        """The counter once it has stopped moving (the last answer's tokens all counted)."""
        last = self.tokens()
        while True:
            time.sleep(0.2)
            now = self.tokens()
            if now == last:
                return now
            last = now

    def stored(self, namespace: str = "__cache__") -> int:
        with open_store(self.cache_uri) as store:
            return store.stats().namespaces.get(namespace, 0)


def _embed(client: InferenceClient, text: str) -> np.ndarray:
    vector = client.infer("encoder", {"text": [text]}).output("embedding").as_numpy().reshape(-1)
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm_service: Service, store_uri: str
) -> Iterator[Rig]:
    with InferenceClient(encoder_service.grpc_url, timeout=30) as client:
        cosine = float(_embed(client, QUESTION) @ _embed(client, PARAPHRASE))
    assert 0.5 < cosine < 1 - 2 * MARGIN, cosine  # a paraphrase, not the same sentence
    root = tmp_path_factory.mktemp("cache")
    cache_uri = f"local://{root}/cache"
    env = {
        "RAGRAPH_ENCODER_URL": encoder_service.grpc_url,
        "RAGRAPH_LLM_URL": llm_service.grpc_url,
        "RAGRAPH_STORE": store_uri,
        "RAGRAPH_CACHE_STORE": cache_uri,
    }
    settings = {
        "below": {"RAGRAPH_CACHE_THRESHOLD": f"{cosine - MARGIN:.6f}"},
        "above": {"RAGRAPH_CACHE_THRESHOLD": f"{cosine + MARGIN:.6f}"},
        "short": {"RAGRAPH_CACHE_TTL_S": str(TTL_S)},
    }
    with ThreadPoolExecutor(3) as pool:  # the shipped variant, by name
        futures = {
            name: pool.submit(start_router, root / f"{name}.log", {**env, **extra}, Path("rag-cached"))
            for name, extra in settings.items()
        }
        routers = {name: future.result() for name, future in futures.items()}
    yield Rig(llm_service, routers["below"], routers["above"], routers["short"], cache_uri, cosine)
    for router in routers.values():
        router.stop()


def _ask(router: Service, question: str, **params: Any) -> tuple[dict[str, str], dict[str, Any], float]:
    with InferenceClient(router.grpc_url, timeout=60) as client:
        started = time.perf_counter()
        reply = client.infer("rag", {"question": [question]}, {**PARAMS, **params})
        seconds = time.perf_counter() - started
    return {t.name: t.as_strings()[0] for t in reply.outputs}, dict(reply.parameters), seconds


def _stream(router: Service, question: str) -> list[InferResponse]:
    with InferenceClient(router.grpc_url, timeout=60) as client:
        return list(client.stream("rag", {"question": [question]}, PARAMS))


def _miss_and_store(rig: Rig, router: Service, question: str, **params: Any) -> dict[str, str]:
    """Ask; it must miss, run the LLM, and its answer must land in the cache."""
    namespace = "__cache__" + (f":{params['namespace']}" if params.get("namespace") else "")
    stored, tokens = rig.stored(namespace), rig.tokens()
    out, info, _ = _ask(router, question, **params)
    assert info["cached"] is False and info["finish_reason"] in {"stop", "length"}
    wait_for(lambda: rig.tokens() > tokens)
    wait_for(lambda: rig.stored(namespace) > stored)  # written off the caller's path, just after
    return out


def test_paraphrase_hits_above_threshold_and_misses_below(rig: Rig) -> None:
    first = _miss_and_store(rig, rig.below, QUESTION)
    _, _, miss_s = _ask(rig.below, QUESTION, max_tokens=64)  # a full run, for the timing below
    tokens = rig.settled_tokens()

    out, info, hit_s = _ask(rig.below, PARAPHRASE)
    assert info["cached"] is True and info["cache_score"] == pytest.approx(rig.cosine, abs=1e-3)
    assert out["answer"] == first["answer"] and out["label"] == first["label"]
    assert json.loads(out["sources"]) == json.loads(first["sources"]) != []
    assert out["guard"] == "benign" and info["completion_tokens"] == 0 and info["flagged"] is False
    assert list(json.loads(info["nodes"])) == ["guard", "switch", "encode", "cache", "combine"]

    parts = _stream(rig.below, PARAPHRASE)  # a stream still sees sources -> text -> final
    assert [p.outputs[0].name for p in parts] == ["sources", "answer", "label"]
    assert parts[1].output("answer").as_strings() == [first["answer"]]
    assert parts[-1].parameters["cached"] is True and parts[-1].parameters["triton_final_response"] is True
    assert rig.settled_tokens() == tokens  # neither hit reached the LLM
    assert rig.below.metric("ragraph_router_cache_total", 'result="hit"') == 2

    out, info, _ = _ask(rig.above, PARAPHRASE)  # the same stored answer, a threshold just above its score
    assert info["cached"] is False and info["cache_score"] == pytest.approx(rig.cosine, abs=1e-3)
    wait_for(lambda: rig.tokens() > tokens)
    assert rig.above.metric("ragraph_router_cache_total", 'result="miss"') >= 1
    print(f"\ncache hit {hit_s * 1000:.0f} ms vs full graph {miss_s * 1000:.0f} ms (64 tokens, tiny LLM, CPU)")


def test_answer_changing_parameters_and_namespace_miss(rig: Rig) -> None:
    wait_for(lambda: _ask(rig.below, QUESTION)[1]["cached"], timeout=30)  # stored under PARAMS
    for change in ({"temperature": 0.7}, {"max_tokens": 9}, {"namespace": "tenant-b"}):
        _miss_and_store(rig, rig.below, QUESTION, **change)
    tokens = rig.settled_tokens()
    _, info, _ = _ask(rig.below, QUESTION, namespace="tenant-b")  # now stored for tenant-b too
    assert info["cached"] is True and rig.settled_tokens() == tokens


def test_answers_expire_after_ttl(rig: Rig) -> None:
    question = "How often should the espresso machine be descaled?"
    _miss_and_store(rig, rig.short, question)
    stored_at = time.monotonic()
    _, info, _ = _ask(rig.short, question)
    assert info["cached"] is True and time.monotonic() - stored_at < TTL_S
    time.sleep(max(0.0, TTL_S - (time.monotonic() - stored_at)) + 0.2)
    tokens = rig.tokens()
    _, info, _ = _ask(rig.short, question)
    assert info["cached"] is False  # expired: not served, the graph ran again
    wait_for(lambda: rig.tokens() > tokens)
    assert rig.short.metric("ragraph_router_cache_total", 'result="expired"') == 1
