"""read_sampling (validation of request parameters) and read_request (the llm model's inputs and
parameters as one typed request), from services/llm/ragraph_llm/llm_io.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_client.tensors import InferRequest, Tensor
from ragraph_llm.engine import Event, SamplingParams
from ragraph_llm.llm_io import MAX_NO_REPEAT_NGRAM, event_response, final_response, read_request, read_sampling
from ragraph_llm.model import Prompt
from ragraph_llm.settings import LLMSettings


@pytest.fixture()
def settings() -> LLMSettings:
    return LLMSettings(default_max_tokens=77, default_temperature=0.7, max_tokens_limit=4096)


# -- read_sampling ----------------------------------------------------------------------------


def test_defaults_come_from_settings(settings: LLMSettings) -> None:
    params = read_sampling({}, settings)
    assert params == SamplingParams(max_tokens=77, temperature=0.7, top_p=1.0, top_k=0, stop=[], seed=None)
    assert not params.greedy
    greedy = read_sampling({}, LLMSettings(default_max_tokens=3, default_temperature=0.0))
    assert greedy.max_tokens == 3 and greedy.temperature == 0.0 and greedy.greedy


def test_numbers_as_strings_ints_and_floats_are_accepted(settings: LLMSettings) -> None:
    as_strings = {"max_tokens": "5", "temperature": "0.5", "top_p": "0.9", "top_k": "3", "seed": "42"}
    typed: dict[str, Any] = {"max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "seed": 42}
    float_ints = {"max_tokens": 5.0, "temperature": 0.5, "top_p": 0.9, "top_k": "3.0", "seed": 42.0}
    expected = SamplingParams(5, 0.5, 0.9, 3, [], 42)
    for params in (as_strings, typed, float_ints):
        assert read_sampling(params, settings) == expected
    assert read_sampling({"temperature": " 0 "}, settings).greedy
    assert read_sampling({"temperature": 1, "top_k": 1}, settings).greedy  # top_k=1 is greedy too


def test_stop_forms(settings: LLMSettings) -> None:
    assert read_sampling({"stop": '["###", "\\n\\n"]'}, settings).stop == ["###", "\n\n"]
    assert read_sampling({"stop": '"END"'}, settings).stop == ["END"]  # one JSON string
    assert read_sampling({"stop": "[]"}, settings).stop == []
    assert read_sampling({"stop": "[" + ",".join(['"x"'] * 16) + "]"}, settings).stop == ["x"] * 16


def test_limits_are_inclusive(settings: LLMSettings) -> None:
    assert read_sampling({"max_tokens": 4096}, settings).max_tokens == 4096
    assert read_sampling({"max_tokens": 1, "top_p": 1, "seed": 0}, settings).seed == 0
    assert read_sampling({"seed": str(2**62)}, settings).seed == 2**62
    assert read_sampling({"temperature": 0}, settings).temperature == 0.0


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": "4097"}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_tokens": "2.5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "inf"}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"temperature": "inf"}, "temperature"),
        ({"temperature": "nan"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": "1.01"}, "top_p"),
        ({"top_p": "nan"}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": "1.5"}, "top_k"),
        ({"stop": "[not json"}, "stop"),
        ({"stop": "[1, 2]"}, "stop"),
        ({"stop": '{"a": "b"}'}, "stop"),
        ({"stop": '["ok", ""]'}, "stop"),
        ({"stop": 5}, "stop"),
        ({"stop": "[" + ",".join(['"x"'] * 17) + "]"}, "stop"),
        ({"seed": -1}, "seed"),
        ({"seed": str(2**63)}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": "-1.1"}, "repetition_penalty"),
        ({"repetition_penalty": "nan"}, "repetition_penalty"),
        ({"repetition_penalty": "inf"}, "repetition_penalty"),
        ({"repetition_penalty": "10.5"}, "repetition_penalty"),
        ({"repetition_penalty": "strong"}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": "2.5"}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": MAX_NO_REPEAT_NGRAM + 1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": True}, "no_repeat_ngram_size"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_bad_values_name_the_parameter(settings: LLMSettings, params: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        read_sampling(params, settings)
    assert f"'{name}'" in info.value.message


def test_limit_comes_from_settings() -> None:
    with pytest.raises(InvalidArgument, match="limit of 10"):
        read_sampling({"max_tokens": 11}, LLMSettings(max_tokens_limit=10))


def test_large_seeds_keep_every_digit(settings: LLMSettings) -> None:
    assert read_sampling({"seed": 2**53 + 1}, settings).seed == 2**53 + 1
    assert read_sampling({"seed": str(2**63 - 1)}, settings).seed == 2**63 - 1


# -- penalties --------------------------------------------------------------------------------


def test_penalties_are_read_and_default_to_off(settings: LLMSettings) -> None:
    params = read_sampling({}, settings)
    assert params.repetition_penalty == 1.0 and params.no_repeat_ngram_size == 0 and not params.penalized
    params = read_sampling({"repetition_penalty": "1.3", "no_repeat_ngram_size": "3"}, settings)
    assert params.repetition_penalty == 1.3 and params.no_repeat_ngram_size == 3 and params.penalized
    assert read_sampling({"repetition_penalty": 10, "no_repeat_ngram_size": MAX_NO_REPEAT_NGRAM}, settings).penalized
    assert read_sampling({"repetition_penalty": "0.5"}, settings).penalized  # < 1 favours repeats: allowed


# -- read_request -----------------------------------------------------------------------------


def _request(*inputs: Tensor, **parameters: Any) -> InferRequest:
    return InferRequest("llm", list(inputs), dict(parameters))


def test_a_prompt_request_is_read_whole(settings: LLMSettings) -> None:
    request = read_request(
        _request(Tensor.from_strings("prompt", ["Why?"]), max_tokens="5", context='["one", "two"]'), settings
    )
    assert (request.prompt, request.messages, request.passages) == ("Why?", None, ["one", "two"])
    assert request.params == SamplingParams(max_tokens=5, temperature=0.7)


def test_messages_are_read_as_role_and_content(settings: LLMSettings) -> None:
    raw = '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "x"}]'
    request = read_request(_request(Tensor.from_strings("messages", [raw])), settings)
    assert request.prompt is None and request.passages == []
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("inputs", "parameters", "named"),
    [
        ([], {}, "'prompt' or 'messages'"),
        ([Tensor.from_strings("prompt", ["a"]), Tensor.from_strings("messages", ["[]"])], {}, "'prompt' or 'messages'"),
        ([Tensor.from_strings("prompt", ["a"]), Tensor.from_strings("question", ["b"])], {}, "input 'question'"),
        ([Tensor.from_strings("prompt", ["a"])], {"temprature": "1"}, "parameter 'temprature'"),
        ([Tensor.from_strings("prompt", ["a"])], {"top_k": "-1"}, "parameter 'top_k'"),
        ([Tensor.from_strings("prompt", ["a"])], {"context": '"one"'}, "parameter 'context'"),
        ([Tensor.from_strings("prompt", ["a", "b"])], {}, "input 'prompt'"),
        ([Tensor.from_numpy("prompt", np.array([1], dtype=np.int64))], {}, "input 'prompt'"),
        ([Tensor.from_strings("messages", ["{}"])], {}, "input 'messages'"),
        ([Tensor.from_strings("messages", ['[{"role": "robot", "content": "x"}]'])], {}, "input 'messages'"),
        ([Tensor.from_strings("prompt", ["x" * 65])], {"context": '["y"]'}, "input 'prompt'"),
    ],
)
def test_bad_requests_name_the_input_or_parameter(
    settings: LLMSettings, inputs: list[Tensor], parameters: dict[str, Any], named: str
) -> None:
    settings.max_prompt_bytes = 65
    with pytest.raises(InvalidArgument) as info:
        read_request(_request(*inputs, **parameters), settings)
    assert named in info.value.message


def test_responses_carry_the_text_and_the_totals_on_the_last_message() -> None:
    prompt = Prompt([1, 2, 3], passages_used=1, context_truncated=True)
    last = Event("end", "length", 3, 4, 12.34567)
    whole = final_response("llm", "all of it", prompt, last)
    assert whole.output("text").as_strings() == ["all of it"]
    assert whole.parameters == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "finish_reason": "length",
        "ttft_ms": 12.346,
        "context_truncated": True,
        "passages_used": 1,
    }
    assert event_response("llm", prompt, Event("del")).parameters == {}
    tail = event_response("llm", prompt, last)
    assert tail.output("text").as_strings() == ["end"] and tail.parameters == whole.parameters
