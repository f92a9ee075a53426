"""A client that cancels a token stream is not an error: the real LLM service, cancelled in every
way a peer does it (closing the stream after a few tokens, stopping reading and cancelling, a
deadline mid-stream, many at once), logs no ERROR line and no traceback, frees every slot and keeps
serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc
from ragraph_client.client import AsyncInferenceClient, InferenceClient
from ragraph_client.errors import RagraphError

from tests.fixtures.servers import Service, start_llm, wait_for

LONG = {"temperature": "0", "max_tokens": 200}


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Service]:
    service = start_llm(tmp_path_factory.mktemp("llm-cancel"), tiny_llm_dir, "--max-batch-size", "4")
    yield service
    service.stop()


def _request(prompt: str) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="llm")
    tensor = message.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(prompt.encode())
    message.parameters["max_tokens"].int64_param = 200
    message.parameters["temperature"].string_param = "0"
    return message


def _errors_since(service: Service, offset: int) -> list[str]:
    text = service.log()[offset:]
    return [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line or "Exception" in line]


def _settled(service: Service, before: float, cancels: int) -> None:
    wait_for(lambda: service.metric("ragraph_llm_running_sequences") == 0, 20)
    finished = 'reason="cancelled"'
    wait_for(lambda: service.metric("ragraph_llm_finished_sequences_total", finished) >= before + cancels, 20)
    time.sleep(0.5)  # anything logged on the server's side of the cancel is written by now


def _third_of_a_whole_stream(service: Service) -> float:
    """Seconds a third of the way into one whole 200-token stream on this machine: cancels and
    deadlines fall there, however fast the machine (or the weight layout chosen at load) is. The
    quicker of two streams: a load spike in one measurement would put the cancels after the end."""
    whole = []
    with InferenceClient(service.grpc_url, timeout=60.0, float_params="string") as client:
        for _ in range(2):
            started = time.monotonic()
            for _ in client.stream("llm", {"prompt": ["a whole stream"]}, LONG, style="mlserver"):
                pass
            whole.append(time.monotonic() - started)
    return max(0.05, min(whole) / 3)


def _still_serving(service: Service) -> None:
    with InferenceClient(service.grpc_url, timeout=60.0, float_params="string") as client:
        response = client.infer("llm", {"prompt": ["after"]}, {"temperature": "0", "max_tokens": 3})
        assert response.parameters["completion_tokens"] == 3
        assert response.parameters["finish_reason"] == "length"


def test_closing_streams_after_a_few_tokens_logs_no_error(llm: Service) -> None:
    offset, before = len(llm.log()), llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')
    with InferenceClient(llm.grpc_url, timeout=60.0, float_params="string") as client:
        for i in range(6):
            stream = client.stream("llm", {"prompt": [f"story {i}"]}, LONG, style="mlserver")
            for _ in range(1 + i % 3):
                next(stream)
            stream.close()
    _settled(llm, before, 6)
    assert _errors_since(llm, offset) == []
    _still_serving(llm)


def test_a_client_that_stops_reading_then_cancels_logs_no_error(llm: Service) -> None:
    late_s = _third_of_a_whole_stream(llm)
    offset, before = len(llm.log()), llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')
    with grpc.insecure_channel(llm.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelStreamInfer(iter([_request(f"idle reader {i}")]), timeout=60) for i in range(4)]
        for call in calls:
            next(call)  # one token, then the client reads nothing more
        time.sleep(late_s)  # the server keeps generating into the unread streams
        for call in calls:
            call.cancel()
            with pytest.raises(grpc.RpcError) as info:
                next(call)
            assert info.value.code() == grpc.StatusCode.CANCELLED
    _settled(llm, before, 1)  # at least one was still generating when it was cancelled
    assert _errors_since(llm, offset) == []
    _still_serving(llm)


async def test_async_cancels_and_deadlines_mid_stream_log_no_error(llm: Service) -> None:
    async with AsyncInferenceClient(llm.grpc_url, timeout=60.0, float_params="string") as client:
        late_s = _third_of_a_whole_stream(llm)
        offset, before = len(llm.log()), llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')

        async def read_some(i: int) -> None:
            stream = client.stream("llm", {"prompt": [f"async {i}"]}, LONG, style="mlserver")
            await stream.__anext__()
            await stream.aclose()

        async def task_cancelled(i: int) -> None:
            async def drain() -> None:
                async for _ in client.stream("llm", {"prompt": [f"task {i}"]}, LONG, style="mlserver"):
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(drain())
            await asyncio.sleep(late_s)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        async def deadline(i: int) -> None:
            with pytest.raises(RagraphError) as info:
                async for _ in client.stream("llm", {"prompt": [f"late {i}"]}, LONG, style="mlserver", timeout=late_s):
                    pass
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

        await asyncio.gather(*(f(i) for i in range(3) for f in (read_some, task_cancelled, deadline)))
    _settled(llm, before, 9)
    assert _errors_since(llm, offset) == []
    _still_serving(llm)


def test_rest_streams_the_client_drops_log_no_error(llm: Service) -> None:
    import http.client
    import json

    offset, before = len(llm.log()), llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')
    prompt = {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["a long rest story"]}
    body = json.dumps({"inputs": [prompt], "parameters": {"max_tokens": 200, "temperature": "0"}})
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", llm.http_port, timeout=30)
        connection.request("POST", "/v2/models/llm/generate_stream", body, {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data:")  # the first event, then the client hangs up
        connection.sock.close()  # type: ignore[union-attr]
        connection.close()
    _settled(llm, before, 1)
    assert _errors_since(llm, offset) == []
    _still_serving(llm)
