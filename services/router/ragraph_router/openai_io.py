"""OpenAI's chat-completion and completion requests -> the ``rag`` model's request (the answers'
shapes are ``openai_out``'s; ``openai_api`` does no JSON shaping). See docs/openai.md.

The rule for fields: every field OpenAI defines that this API honours is checked and used; the
fields an SDK sends on its own or that change nothing here (``stream``, ``stream_options``,
``user``, ``metadata``, ``logprobs: false``, ``n: 1``, zero penalties) are accepted; anything
else (a typo, ``tools``, ``response_format``, ``n: 2``) is a 400 naming the field."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ragraph_client.errors import InvalidArgument
from ragraph_client.tensors import InferRequest, Param, Tensor
from ragraph_retrieval import filters

# the rag model's own parameters, taken from the body's top level (OpenAI SDKs: extra_body)
GRAPH_FIELDS = ("top_k", "filter", "namespace")
_OPENAI_FIELDS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "user",
    "metadata",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
}
_ROLES = ("system", "developer", "user", "assistant", "tool")


class BadField(InvalidArgument):
    """A 400 naming the body field at fault (OpenAI's ``error.param``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    params: dict[str, Param] = field(default_factory=dict)  # the rag model's parameters
    prompt: str | None = None  # /v1/completions: the prompt as given (the llm model takes it raw)

    @property
    def question(self) -> str:
        """The last user message: what the rag model answers."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        raise BadField("messages", "messages holds no user message: the rag model answers the last one")

    def infer_request(self, request_id: str) -> InferRequest:
        tensor = Tensor.from_strings("question", [self.question])
        return InferRequest(self.model, [tensor], dict(self.params), request_id)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(body: dict[str, Any], name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadField(name, f"'{name}' must be a number, got {_kind(value)}")
    if not (low < value if low_open else low <= value) or value > high:
        raise BadField(name, f"'{name}' must be {'>' if low_open else '>='} {low:g} and <= {high:g}, got {value}")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(name, f"'{name}' must be an integer, got {_kind(value)}")
    if value < low:
        raise BadField(name, f"'{name}' must be >= {low}, got {value}")
    return value


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadField(f"messages[{i}].content[{j}]", f"messages[{i}].content[{j}]: only text parts are taken")
            texts.append(part["text"])
        return "".join(texts)
    raise BadField(f"messages[{i}].content", f"messages[{i}].content must be a string or a list of text parts")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadField("messages", "'messages' must be a non-empty array of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadField(f"messages[{i}]", f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise BadField(f"messages[{i}].role", f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        role = "system" if role == "developer" else role  # the LLM has no developer role
        out.append({"role": str(role), "content": _content(message, i)})
    return out


def _stop(value: Any) -> str | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadField("stop", "'stop' must be a non-empty string or a list of them")
    return json.dumps(stops, ensure_ascii=False)


def _flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage), and the fields accepted only with their neutral values."""
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadField("stream", f"'stream' must be a boolean, got {_kind(stream)}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise BadField("stream_options", "'stream_options' takes one field, include_usage (a boolean)")
    include_usage = options.get("include_usage") or False
    if not isinstance(include_usage, bool):
        raise BadField("stream_options", "stream_options.include_usage must be a boolean")
    if options and not stream:
        raise BadField("stream_options", "'stream_options' is only allowed when 'stream' is true")
    if body.get("n") not in (None, 1):
        raise BadField("n", f"'n' must be 1: this API makes one choice per request, got {body['n']!r}")
    if body.get("logprobs") not in (None, False):
        raise BadField("logprobs", "'logprobs' is not supported (only false)")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise BadField(name, f"'{name}' is not supported (only 0); the rag model takes repetition_penalty")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise BadField("metadata", "'metadata' must be an object")
    return stream, include_usage


def read_chat(body: dict[str, Any]) -> ChatRequest:
    """A chat-completions body, checked field by field (BadField naming the first bad one)."""
    unknown = sorted(set(body) - _OPENAI_FIELDS - set(GRAPH_FIELDS))
    if unknown:
        raise BadField(unknown[0], f"unknown or unsupported field '{unknown[0]}' (see docs/openai.md for the fields)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadField("model", "'model' must be a non-empty string")
    stream, include_usage = _flags(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise BadField("user", "'user' must be a string")
    max_tokens = _integer(body, "max_tokens", 1)
    max_completion = _integer(body, "max_completion_tokens", 1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise BadField("max_completion_tokens", "give 'max_completion_tokens' or 'max_tokens', not both")
    limits: dict[str, Param | None] = {
        "max_tokens": max_completion if max_completion is not None else max_tokens,
        "temperature": _number(body, "temperature", 0.0, 2.0),
        "top_p": _number(body, "top_p", 0.0, 1.0, low_open=True),
        "seed": _integer(body, "seed", 0),
        "stop": _stop(body.get("stop")),
        "top_k": _integer(body, "top_k", 1),
        "namespace": body.get("namespace"),
    }
    if limits["namespace"] is not None and not isinstance(limits["namespace"], str):
        raise BadField("namespace", "'namespace' must be a string")
    raw_filter = body.get("filter")
    if raw_filter is not None:
        if not isinstance(raw_filter, (dict, str)):
            raise BadField("filter", "'filter' must be an object (or its JSON text)")
        text = raw_filter if isinstance(raw_filter, str) else json.dumps(raw_filter, ensure_ascii=False)
        try:
            filters.load(text)  # checked here too, so that the error names the field
        except InvalidArgument as exc:
            raise BadField("filter", exc.message) from exc
        limits["filter"] = text
    params: dict[str, Param] = {name: value for name, value in limits.items() if value is not None}
    chat = ChatRequest(model, _messages(body.get("messages")), stream, include_usage, user, params)
    _ = chat.question  # a body without a user message is refused here, before any work
    return chat


def read_completion(body: dict[str, Any]) -> ChatRequest:
    """A (legacy) completions body: one ``prompt`` string, read as a chat with that one user message."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadField("prompt", "'prompt' must be one non-empty string (token arrays and batches are not taken)")
    for name, neutral in (("echo", (None, False)), ("best_of", (None, 1)), ("suffix", (None,)), ("logprobs", (None,))):
        if body.get(name) not in neutral:
            raise BadField(name, f"'{name}' is not supported (only {neutral[-1]!r})")
    rest = {k: v for k, v in body.items() if k not in ("prompt", "echo", "best_of", "suffix", "logprobs")}
    if "messages" in rest:
        raise BadField("messages", "unknown field 'messages': completions take 'prompt'")
    chat = read_chat({**rest, "messages": [{"role": "user", "content": prompt}]})
    chat.prompt = prompt
    return chat
