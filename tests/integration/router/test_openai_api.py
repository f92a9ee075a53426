"""The router's OpenAI-compatible API, driven by the official ``openai`` package (sync and async
clients, whole and streamed): chat completions on the ``rag`` model with its sources, the
streamed text equal to the whole one at temperature 0, OpenAI-shaped errors (400 naming the
field, 401, 404, 429 with Retry-After), the model list, and the router's request metrics.

One router for the module, with keys on (a plain key, and one allowed a single request), on the
session encoder and tiny LLM over a two-document corpus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.fixtures.corpus import ingest_corpus
from tests.fixtures.rest import QUESTION, call
from tests.fixtures.servers import Service, graph_env, start_router

GREEDY = {"max_tokens": 12, "temperature": 0.0}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
REQUESTS = "ragraph_router_requests_total"


@dataclass
class Keys:
    path: Path
    good: str
    limited: str  # 1 request, then 1 every 50 s


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    from ragraph_router.access.keys import create_key

    path = tmp_path_factory.mktemp("openai-keys") / "keys.json"
    good, _ = create_key(path, "openai-tests")
    limited, _ = create_key(path, "openai-limited", rps=0.02, burst=1)
    return Keys(path, good, limited)


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm_service: Service, keys: Keys
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("openai")
    uri = ingest_corpus(root, encoder_service.grpc_url, ["espresso-machine-care.md", "houseplant-care.md"])
    env = graph_env(encoder_service, llm_service, uri, api_keys_file=str(keys.path))
    service = start_router(root / "router.log", env)
    yield service
    service.stop()


def client(router: Service, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{router.http_url}/v1", api_key=key or "no-such-key", max_retries=0)


def async_client(router: Service, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://{router.http_url}/v1", api_key=key, max_retries=0)


# --- chat completions --------------------------------------------------------------------------------------


def test_chat_completion_answers_with_sources_usage_and_metrics(router: Service, keys: Keys) -> None:
    before = router.metric(REQUESTS, 'code="OK",method="OpenAIChat"')
    reply = client(router, keys.good).chat.completions.with_raw_response.create(
        model="rag", messages=MESSAGES, user="alice", extra_body={"top_k": 2}, **GREEDY
    )
    completion = reply.parse()
    assert reply.headers["x-request-id"] and completion.id == f"chatcmpl-{reply.headers['x-request-id']}"
    assert completion.object == "chat.completion" and completion.model == "rag"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    sources = (completion.model_extra or {})["sources"]
    assert [s["n"] for s in sources] == [1, 2]  # top_k from the body's extra fields
    assert sources[0]["doc_id"] == "espresso-machine-care.md"
    assert router.metric(REQUESTS, 'code="OK",method="OpenAIChat"') == before + 1
    assert "user 'alice'" in router.log()


def test_graph_parameters_from_extra_body(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    for where in ({"doc_id": "houseplant-care.md"}, '{"doc_id": {"$eq": "houseplant-care.md"}}'):
        reply = sync.chat.completions.create(
            model="rag", messages=MESSAGES, extra_body={"top_k": 3, "filter": where}, **GREEDY
        )
        sources = (reply.model_extra or {})["sources"]
        assert sources and {s["doc_id"] for s in sources} == {"houseplant-care.md"}
    empty = sync.chat.completions.create(
        model="rag", messages=MESSAGES, extra_body={"namespace": "nobody-here"}, **GREEDY
    )
    assert (empty.model_extra or {})["sources"] == []
    with pytest.raises(openai.BadRequestError) as caught:
        sync.chat.completions.create(model="rag", messages=MESSAGES, extra_body={"filter": {"doc_id": {"$near": 1}}})
    assert caught.value.param == "filter"
    assert "$near" in caught.value.message


def test_streamed_deltas_equal_the_whole_answer(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    whole = sync.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY)
    before = router.metric(REQUESTS, 'code="OK",method="OpenAIChatStream"')
    chunks = list(
        sync.chat.completions.create(
            model="rag", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert [s["n"] for s in (first.model_extra or {})["sources"]] == [s["n"] for s in whole.model_extra["sources"]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [whole.choices[0].finish_reason]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1
    assert router.metric(REQUESTS, 'code="OK",method="OpenAIChatStream"') == before + 1


def test_raw_sse_frames_and_refusals_before_the_stream(router: Service, keys: Keys) -> None:
    body = {"model": "rag", "messages": MESSAGES, "stream": True, **GREEDY}
    reply = call(router, "POST", "/v1/chat/completions", body, key=keys.good)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in reply.body.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames) and frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[len("data: ") :]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and "sources" in chunks[0]
    assert all("sources" not in c for c in chunks[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # refused by the graph's own parameter check, before any chunk: a plain JSON 400
    late = call(router, "POST", "/v1/chat/completions", {**body, "top_k": 10_000}, key=keys.good)
    assert late.status == 400 and late.headers["content-type"].startswith("application/json")
    assert late.body["error"]["param"] == "top_k"


def test_async_client_whole_and_streamed(router: Service, keys: Keys) -> None:
    async def run() -> tuple[str, str, list[object]]:
        async with async_client(router, keys.good) as aclient:
            whole = await aclient.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY)
            stream = await aclient.chat.completions.create(model="rag", messages=MESSAGES, stream=True, **GREEDY)
            chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return whole.choices[0].message.content or "", text, chunks

    whole, streamed, chunks = asyncio.run(run())
    assert whole and streamed == whole
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


def test_stop_and_max_completion_tokens(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    short = sync.chat.completions.create(model="rag", messages=MESSAGES, max_completion_tokens=3, temperature=0.0)
    assert short.usage is not None and short.usage.completion_tokens <= 3
    assert short.choices[0].finish_reason == "length"
    whole = sync.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY).choices[0].message.content
    assert whole and len(whole) > 2
    stop = whole[len(whole) // 2 :][:2].strip() or whole[-1]
    cut = sync.chat.completions.create(model="rag", messages=MESSAGES, stop=[stop], **GREEDY)
    assert stop not in (cut.choices[0].message.content or "")


# --- the LLM on its own ------------------------------------------------------------------------------------


def test_llm_model_takes_the_whole_message_list(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    before = router.metric(REQUESTS, 'code="OK",method="OpenAIChat"')
    short = sync.chat.completions.create(model="llm", messages=MESSAGES[1:], **GREEDY)
    whole = sync.chat.completions.create(model="llm", messages=MESSAGES, **GREEDY)
    assert router.metric(REQUESTS, 'code="OK",method="OpenAIChat"') == before + 2
    assert short.usage is not None and whole.usage is not None
    # the system message reached the LLM: the prompt grew, and no passages were added (no retrieval)
    assert whole.usage.prompt_tokens > short.usage.prompt_tokens
    rag = sync.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY)
    assert rag.usage is not None and rag.usage.prompt_tokens > whole.usage.prompt_tokens + 50
    assert (whole.model_extra or {})["sources"] == [] and whole.model == "llm"
    chunks = list(
        sync.chat.completions.create(
            model="llm", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_llm_model_refuses_graph_parameters(router: Service, keys: Keys) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(router, keys.good).chat.completions.create(
            model="llm", messages=MESSAGES, extra_body={"top_k": 2}, **GREEDY
        )
    assert caught.value.param == "top_k" and "model 'llm' takes none" in caught.value.message
    with pytest.raises(openai.AuthenticationError):
        client(router, None).chat.completions.create(model="llm", messages=MESSAGES, stream=True)


# --- completions (prompt in, text out) ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["rag", "llm"])
def test_completions_whole_and_streamed(router: Service, keys: Keys, model: str) -> None:
    sync = client(router, keys.good)
    before = router.metric(REQUESTS, 'code="OK",method="OpenAICompletion"')
    whole = sync.completions.create(model=model, prompt=QUESTION, **GREEDY)
    assert router.metric(REQUESTS, 'code="OK",method="OpenAICompletion"') == before + 1
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-") and whole.model == model
    assert whole.choices[0].text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 12
    sources = (whole.model_extra or {})["sources"]
    assert (len(sources) > 0) == (model == "rag")
    chunks = list(
        sync.completions.create(
            model=model, prompt=QUESTION, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_refuse_what_they_do_not_do(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    for extra, param in (({"echo": True}, "echo"), ({"best_of": 2}, "best_of"), ({"n": 2}, "n")):
        with pytest.raises(openai.BadRequestError) as caught:
            sync.completions.create(model="rag", prompt=QUESTION, **extra)
        assert caught.value.param == param
    with pytest.raises(openai.BadRequestError) as caught:
        sync.completions.create(model="llm", prompt=["one", "two"])
    assert caught.value.param == "prompt" and "batches are not taken" in caught.value.message


# --- embeddings ---------------------------------------------------------------------------------------------


def test_embeddings_match_the_encoder(router: Service, keys: Keys, encoder_service: Service) -> None:
    from ragraph_client.client import InferenceClient
    from ragraph_retrieval.tokens import encoder_counter

    texts = ["How do I descale it?", "Water the fern weekly."]
    with InferenceClient(encoder_service.grpc_url) as direct:
        expected = direct.infer("encoder", {"text": texts}).output("embedding").as_numpy()
    sync = client(router, keys.good)
    before = router.metric(REQUESTS, 'code="OK",method="OpenAIEmbeddings"')
    as_floats = sync.embeddings.create(model="encoder", input=texts, encoding_format="float")
    as_base64 = sync.embeddings.create(model="encoder", input=texts)  # the SDK asks for base64 and decodes it
    one = sync.embeddings.create(model="encoder", input=texts[1])
    assert router.metric(REQUESTS, 'code="OK",method="OpenAIEmbeddings"') == before + 3
    for reply in (as_floats, as_base64):
        assert [d.index for d in reply.data] == [0, 1] and reply.model == "encoder"
        assert np.allclose(np.array([d.embedding for d in reply.data]), expected, atol=1e-6)
    assert np.allclose(one.data[0].embedding, expected[1], atol=1e-6)
    counter, _ = encoder_counter()
    assert as_floats.usage.prompt_tokens == sum(counter.count_many(texts)) == as_floats.usage.total_tokens
    assert one.usage.prompt_tokens == counter.count(texts[1]) > 0


def test_embeddings_errors(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    with pytest.raises(openai.BadRequestError) as caught:
        sync.embeddings.create(model="encoder", input=[])
    assert caught.value.param == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        sync.embeddings.create(model="encoder", input="x", dimensions=8)
    assert caught.value.param == "dimensions" and "384" in caught.value.message
    with pytest.raises(openai.NotFoundError) as caught:
        sync.embeddings.create(model="text-embedding-3-small", input="x")
    assert "unknown model 'text-embedding-3-small'" in caught.value.message
    bad = call(
        router, "POST", "/v1/embeddings", {"model": "encoder", "input": "x", "encoding_format": "int8"}, keys.good
    )
    assert bad.status == 400 and bad.body["error"]["param"] == "encoding_format"
    with pytest.raises(openai.AuthenticationError):
        client(router, None).embeddings.create(model="encoder", input="x")


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"n": 2}, "n", "'n' must be 1"),
        ({"temperature": 3.5}, "temperature", "'temperature' must be >= 0 and <= 2"),
        ({"top_p": 0}, "top_p", "'top_p' must be > 0"),
        ({"max_tokens": 0}, "max_tokens", "'max_tokens' must be >= 1"),
        ({"extra_body": {"temprature": 0.5}}, "temprature", "unknown or unsupported field 'temprature'"),
        ({"extra_body": {"top_k": 0}}, "top_k", "'top_k' must be >= 1"),
        ({"extra_body": {"top_k": 10_000}}, "top_k", "parameter 'top_k' must be between 1 and"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported field 'tools'"),
        ({"stream": True, "n": 3}, "n", "'n' must be 1"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    router: Service, keys: Keys, extra: dict, param: str, words: str
) -> None:
    before = router.metric(REQUESTS, 'code="INVALID_ARGUMENT"')
    with pytest.raises(openai.BadRequestError) as caught:
        client(router, keys.good).chat.completions.create(model="rag", messages=MESSAGES, **extra)
    error = caught.value
    assert error.status_code == 400 and error.param == param and error.type == "invalid_request_error"
    assert words in error.message
    assert router.metric(REQUESTS, 'code="INVALID_ARGUMENT"') == before + 1


def test_no_user_message_is_400(router: Service, keys: Keys) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(router, keys.good).chat.completions.create(model="rag", messages=[{"role": "system", "content": "hi"}])
    assert caught.value.param == "messages" and "no user message" in caught.value.message


def test_unknown_model_is_404(router: Service, keys: Keys) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            client(router, keys.good).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
        assert "unknown model 'gpt-4o'" in caught.value.message and caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client(router, keys.good).models.retrieve("gpt-4o")


def test_error_body_has_openai_shape(router: Service, keys: Keys) -> None:
    reply = call(router, "POST", "/v1/chat/completions", {"model": "rag", "messages": MESSAGES, "n": 2}, key=keys.good)
    assert reply.status == 400
    assert reply.body == {
        "error": {
            "message": "'n' must be 1: this API makes one choice per request, got 2",
            "type": "invalid_request_error",
            "param": "n",
            "code": "invalid_argument",
        }
    }
    assert reply.headers["x-request-id"]
    bad_json = call(router, "POST", "/v1/chat/completions", b"{not json", key=keys.good)
    assert bad_json.status == 400 and bad_json.body["error"]["type"] == "invalid_request_error"


def test_request_ids(router: Service, keys: Keys) -> None:
    url = f"http://{router.http_url}/v1"
    given = openai.OpenAI(base_url=url, api_key=keys.good, max_retries=0, default_headers={"x-request-id": "oa-42"})
    assert given.chat.completions.create(model="llm", messages=MESSAGES, **GREEDY).id == "chatcmpl-oa-42"
    bad = openai.OpenAI(base_url=url, api_key=keys.good, max_retries=0, default_headers={"x-request-id": "bad id"})
    for create in (
        lambda: bad.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY),
        lambda: bad.chat.completions.create(model="llm", messages=MESSAGES, stream=True, **GREEDY),
        lambda: bad.embeddings.create(model="encoder", input="x"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            create()
        assert "x-request-id" in caught.value.message
        assert caught.value.response.headers["x-request-id"] not in ("", "bad id")


def test_keys(router: Service, keys: Keys) -> None:
    before = router.metric("ragraph_router_unauthenticated_total")
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(router, None).chat.completions.create(model="rag", messages=MESSAGES, stream=stream, **GREEDY)
        assert caught.value.status_code == 401 and caught.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(router, None).models.list()
    # a bad body without a key: the key is refused first
    with pytest.raises(openai.AuthenticationError):
        client(router, None).chat.completions.create(model="rag", messages=MESSAGES, n=5)
    assert router.metric("ragraph_router_unauthenticated_total") == before + 4


def test_rate_limit_is_429_with_retry_after(router: Service, keys: Keys) -> None:
    limited = client(router, keys.limited)
    before = router.metric("ragraph_router_rate_limited_total")
    assert limited.chat.completions.create(model="rag", messages=MESSAGES, **GREEDY).choices[0].message.content
    for create in (
        lambda: limited.chat.completions.create(model="rag", messages=MESSAGES, stream=True, **GREEDY),
        lambda: limited.chat.completions.create(model="llm", messages=MESSAGES, **GREEDY),
        lambda: limited.embeddings.create(model="encoder", input="x"),
    ):
        with pytest.raises(openai.RateLimitError) as caught:
            create()
        error = caught.value
        assert error.status_code == 429 and error.type == "rate_limit_error"
        assert int(error.response.headers["retry-after"]) >= 1
    assert router.metric("ragraph_router_rate_limited_total") == before + 3


# --- models ---------------------------------------------------------------------------------------------------


def test_models(router: Service, keys: Keys) -> None:
    sync = client(router, keys.good)
    assert [m.id for m in sync.models.list()] == ["rag", "llm", "encoder"]
    model = sync.models.retrieve("rag")
    assert model.id == "rag" and model.owned_by == "ragraph"
    raw = call(router, "GET", "/v1/models", key=keys.good)
    assert json.loads(json.dumps(raw.body))["object"] == "list"
