"""The OpenAI-compatible API's answers: chat completions and (legacy) text completions, whole
and as stream chunks, the usage, and OpenAI's error object (``openai_io`` reads the requests)."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
from ragraph_client.errors import RagraphError

from .openai_io import ChatRequest

# OpenAI error types by HTTP status (what its SDKs map to their exception classes)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    499: "request_cancelled",  # CANCELLED: not the caller's mistake, not a server fault; no SDK class
    503: "service_unavailable",
}
_PARAM_IN_MESSAGE = re.compile(r"parameter '(\w+)'")


def error_body(exc: RagraphError, status: int) -> dict[str, Any]:
    """OpenAI's error object; ``param`` is the field at fault when one is known."""
    param = getattr(exc, "param", None)
    if param is None:
        found = _PARAM_IN_MESSAGE.search(exc.message)
        param = found.group(1) if found else None
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if exc.code == grpc.StatusCode.NOT_FOUND else exc.code.name.lower()
    return {"error": {"message": exc.message, "type": kind, "param": param, "code": code}}


def finish_reason(raw: Any) -> str:
    """OpenAI's finish_reason for the LLM's: ``length``, ``content_filter`` (the output guard), else ``stop``."""
    return {"length": "length", "guarded": "content_filter"}.get(str(raw or ""), "stop")


def usage(parameters: dict[str, Any]) -> dict[str, int]:
    prompt = int(parameters.get("prompt_tokens", 0) or 0)
    completion = int(parameters.get("completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _head(chat: ChatRequest, request_id: str, streamed: bool) -> dict[str, Any]:
    text = chat.prompt is not None
    kind = "text_completion" if text else "chat.completion.chunk" if streamed else "chat.completion"
    return {
        "id": f"{'cmpl' if text else 'chatcmpl'}-{request_id}",
        "object": kind,
        "created": int(time.time()),
        "model": chat.model,
    }


def _choice(chat: ChatRequest, text: str | None, reason: str | None, streamed: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0}
    if chat.prompt is not None:
        choice["text"] = text or ""
    elif streamed:
        choice["delta"] = {} if text is None else {"content": text}
    else:
        choice["message"] = {"role": "assistant", "content": text or ""}
    return {**choice, "finish_reason": reason, "logprobs": None}


def response(
    chat: ChatRequest, request_id: str, answer: str, sources: list[Any], parameters: dict[str, Any]
) -> dict[str, Any]:
    """The whole answer, with the ``sources`` extension field."""
    choice = _choice(chat, answer, finish_reason(parameters.get("finish_reason")), streamed=False)
    return {**_head(chat, request_id, False), "choices": [choice], "usage": usage(parameters), "sources": sources}


def first_chunk(chat: ChatRequest, request_id: str, sources: list[Any]) -> dict[str, Any]:
    """The stream's first chunk: the assistant role (chat), no text yet, and the ``sources``."""
    out = delta_chunk(chat, request_id, "")
    if chat.prompt is None:
        out["choices"][0]["delta"] = {"role": "assistant", "content": ""}
    return {**out, "sources": sources}


def delta_chunk(chat: ChatRequest, request_id: str, text: str | None, reason: str | None = None) -> dict[str, Any]:
    return {**_head(chat, request_id, True), "choices": [_choice(chat, text, reason, streamed=True)]}


def usage_chunk(chat: ChatRequest, request_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
    return {**_head(chat, request_id, True), "choices": [], "usage": usage(parameters)}
