"""The LLM service over the wire: ``ragraph serve llm`` on a tiny local model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ragraph_client.client import AsyncInferenceClient, InferenceClient
from ragraph_client.errors import RagraphError
from ragraph_client.tensors import InferResponse

from tests.fixtures.servers import Service, start_llm, wait_for

GREEDY = {"temperature": "0"}
PROMPTS = [
    "The printing press was invented by",
    "Retrieval augmented generation means",
    "Grüße aus München, naïve café 👋",
]


@pytest.fixture()
def llm(llm_service: Service) -> Iterator[InferenceClient]:
    with InferenceClient(llm_service.grpc_url, timeout=60.0, float_params="string") as client:
        yield client


@pytest.fixture(scope="module")
def reference(tiny_llm_dir: Path) -> Any:
    """The same model loaded in the test process, for plain ``generate``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir))
    model.eval()
    return tokenizer, model


def generate_text(reference: Any, prompt_ids: list[int], max_new_tokens: int) -> str:
    import torch

    tokenizer, model = reference
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True))


def text_of(response: InferResponse) -> str:
    return response.outputs[0].as_strings()[0]


def collect(stream: Iterator[InferResponse]) -> tuple[list[str], dict[str, Any]]:
    deltas, last = [], {}
    for response in stream:
        deltas.append(text_of(response))
        last = response.parameters
    return deltas, last


def test_infer_matches_generate_and_reports_totals(llm: InferenceClient, reference: Any) -> None:
    tokenizer, _ = reference
    for prompt in PROMPTS:
        response = llm.infer("llm", {"prompt": [prompt]}, {**GREEDY, "max_tokens": 24})
        ids = tokenizer(prompt)["input_ids"]
        assert text_of(response) == generate_text(reference, ids, 24)
        params = response.parameters
        assert params["prompt_tokens"] == len(ids)
        assert params["completion_tokens"] == 24
        assert params["finish_reason"] == "length"
        assert float(params["ttft_ms"]) > 0
        assert params["context_truncated"] is False


def test_stream_deltas_join_to_infer_text(llm: InferenceClient) -> None:
    for prompt in PROMPTS:
        whole = text_of(llm.infer("llm", {"prompt": [prompt]}, {**GREEDY, "max_tokens": 30}))
        deltas, last = collect(llm.stream("llm", {"prompt": [prompt]}, {**GREEDY, "max_tokens": 30}, style="mlserver"))
        assert len(deltas) > 3, "a stream answers one response per delta"
        assert "".join(deltas) == whole
        assert last["completion_tokens"] == 30 and last["finish_reason"] == "length"
        for delta in deltas:
            assert "\ufffd" not in delta


def test_concurrent_requests_share_batches_and_match_solo(llm_service: Service, llm: InferenceClient) -> None:
    solo = [text_of(llm.infer("llm", {"prompt": [p]}, {**GREEDY, "max_tokens": 100})) for p in PROMPTS]
    results: dict[int, str] = {}
    before = llm_service.metric("ragraph_llm_step_batch_size_sum") - llm_service.metric(
        "ragraph_llm_step_batch_size_count"
    )

    def run(i: int) -> None:
        time.sleep(0.005 * i)  # staggered arrivals join a running batch (each runs 100 steps)
        results[i] = text_of(llm.infer("llm", {"prompt": [PROMPTS[i % 3]]}, {**GREEDY, "max_tokens": 100}))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(6)] == [solo[i % 3] for i in range(6)]
    after = llm_service.metric("ragraph_llm_step_batch_size_sum") - llm_service.metric(
        "ragraph_llm_step_batch_size_count"
    )
    assert after > before, "some engine steps ran more than one sequence"


def test_chat_messages_use_the_chat_template(llm: InferenceClient, reference: Any) -> None:
    tokenizer, _ = reference
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who printed books?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Who printed books?" in rendered and rendered != "Who printed books?"
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    response = llm.infer("llm", {"messages": [json.dumps(messages)]}, {**GREEDY, "max_tokens": 16})
    assert response.parameters["prompt_tokens"] == len(ids)
    assert text_of(response) == generate_text(reference, ids, 16)


def test_stop_strings_end_the_text_and_never_leak(llm: InferenceClient) -> None:
    prompt = {"prompt": [PROMPTS[0]]}
    full = text_of(llm.infer("llm", prompt, {**GREEDY, "max_tokens": 40}))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3 and stop.strip()
    expected = full[: full.index(stop)]
    params = {**GREEDY, "max_tokens": 40, "stop": json.dumps(["never-appears", stop])}
    response = llm.infer("llm", prompt, params)
    assert text_of(response) == expected
    assert response.parameters["finish_reason"] == "stop"
    deltas, last = collect(llm.stream("llm", prompt, params, style="mlserver"))
    assert "".join(deltas) == expected
    assert last["finish_reason"] == "stop"
    assert all(stop not in d for d in deltas)


def test_context_passages_are_dropped_then_prompt_truncated(llm: InferenceClient) -> None:
    passages = [f"Passage {i}: " + "movable type printing spread across Europe " * 4 for i in range(40)]
    response = llm.infer(
        "llm", {"prompt": ["Who invented printing?"]}, {**GREEDY, "max_tokens": 16, "context": json.dumps(passages)}
    )
    params = response.parameters
    assert params["context_truncated"] is True
    assert 0 < int(params["passages_used"]) < len(passages)
    assert int(params["prompt_tokens"]) + 16 <= 256  # the tiny model's window
    assert params["completion_tokens"] == 16

    few = llm.infer("llm", {"prompt": ["Who?"]}, {**GREEDY, "max_tokens": 8, "context": json.dumps(passages[:1])})
    assert few.parameters["context_truncated"] is False and few.parameters["passages_used"] == 1

    huge = llm.infer("llm", {"prompt": ["printing " * 2000]}, {**GREEDY, "max_tokens": 8})
    assert huge.parameters["context_truncated"] is True
    assert int(huge.parameters["prompt_tokens"]) == 256 - 8


def test_deadline_cancels_generation(llm_service: Service, llm: InferenceClient) -> None:
    params = {**GREEDY, "max_tokens": 240}
    start = time.monotonic()
    assert llm.infer("llm", {"prompt": ["slow"]}, params).parameters["completion_tokens"] == 240
    full = time.monotonic() - start
    cancelled = llm_service.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')
    with pytest.raises(RagraphError) as info:
        llm.infer("llm", {"prompt": ["slow"]}, params, timeout=full / 4)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: llm_service.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"') > cancelled)
    wait_for(lambda: llm_service.metric("ragraph_llm_running_sequences") == 0)


@pytest.fixture(scope="module")
def narrow_service(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Service]:
    """One running slot and one queue slot, to fill up on purpose."""
    service = start_llm(
        tmp_path_factory.mktemp("llm-narrow"), tiny_llm_dir, "--max-batch-size", "1", "--max-queued", "1"
    )
    yield service
    service.stop()


def test_cancel_mid_stream_frees_the_slot(narrow_service: Service) -> None:
    with InferenceClient(narrow_service.grpc_url, timeout=60.0, float_params="string") as client:
        stream = client.stream(
            "llm", {"prompt": ["tell a long story"]}, {**GREEDY, "max_tokens": 230}, style="mlserver"
        )
        first = [text_of(next(stream)) for _ in range(3)]
        assert all(isinstance(t, str) for t in first)
        stream.close()  # the client goes away mid-stream
        wait_for(lambda: narrow_service.metric("ragraph_llm_running_sequences") == 0)
        assert narrow_service.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"') >= 1
        # the one slot is free again: a short request runs now, not after 230 tokens
        response = client.infer("llm", {"prompt": ["next"]}, {**GREEDY, "max_tokens": 4})
        assert response.parameters["completion_tokens"] == 4
        assert narrow_service.metric("ragraph_llm_generated_tokens_total") < 100


async def test_queue_full_is_resource_exhausted_immediately(narrow_service: Service) -> None:
    async def gauge(name: str) -> float:
        return await asyncio.to_thread(narrow_service.metric, name)

    async def until(name: str, value: float) -> None:
        for _ in range(200):
            if await gauge(name) == value:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} never reached {value}")

    async with AsyncInferenceClient(narrow_service.grpc_url, timeout=60.0, float_params="string") as client:
        long = {**GREEDY, "max_tokens": 240}
        running = client.stream("llm", {"prompt": ["one"]}, long, style="mlserver")
        await running.__anext__()  # holds the only batch slot

        async def drain() -> None:
            async for _ in client.stream("llm", {"prompt": ["two"]}, long, style="mlserver"):
                pass

        queued = asyncio.create_task(drain())
        await until("ragraph_llm_queue_depth", 1)
        start = time.monotonic()
        with pytest.raises(RagraphError) as info:
            await client.infer("llm", {"prompt": ["three"]}, {**GREEDY, "max_tokens": 4})
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in info.value.message and "max_queued=1" in info.value.message
        assert time.monotonic() - start < 2.0
        await running.aclose()
        queued.cancel()
        await until("ragraph_llm_running_sequences", 0)
        await until("ragraph_llm_queue_depth", 0)
        # nothing is stuck: the server serves the next request
        after = await client.infer("llm", {"prompt": ["four"]}, {**GREEDY, "max_tokens": 3})
        assert after.parameters["completion_tokens"] == 3


def test_metrics_exposed(llm_service: Service, llm: InferenceClient) -> None:
    llm.infer("llm", {"prompt": ["metrics"]}, {**GREEDY, "max_tokens": 5})
    assert llm_service.metric("ragraph_llm_time_to_first_token_seconds_count") >= 1
    assert llm_service.metric("ragraph_llm_inter_token_seconds_count") >= 4
    assert llm_service.metric("ragraph_llm_generated_tokens_total") >= 5
    assert llm_service.metric("ragraph_llm_finished_sequences_total", 'reason="length"') >= 1
