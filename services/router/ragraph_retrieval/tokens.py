"""Token counting, one interface for every place that budgets tokens.

* Chunk sizes are counted with the encoder's own tokenizer (:func:`encoder_counter`), since that
  is the tokenizer that truncates.
* Prompt budgets are estimated with tiktoken (:func:`prompt_counter`, ``cl100k_base`` by
  default). tiktoken downloads its encoding files on first use; offline it can only load them
  from ``TIKTOKEN_CACHE_DIR``. Without that variable, or when loading fails, the caller's
  fallback tokenizer (the LLM's or the encoder's) counts instead, after one warning line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

# The encoder service resolves its model reference (the bundled all-MiniLM-L6-v2 copy for the
# default id) with this same function, so chunks are counted with the tokenizer that embeds them.
from ragraph_encoder.model import resolve_model as resolve_encoder_path
from ragraph_encoder.settings import DEFAULT_MODEL as DEFAULT_ENCODER

log = logging.getLogger("ragraph.tokens")

DEFAULT_TIKTOKEN = "cl100k_base"


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class HFTokenCounter:
    """Counts with a Hugging Face tokenizer, special tokens excluded."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token (for cutting a text at a token boundary)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(span) for span in enc["offset_mapping"]]


class TiktokenCounter:
    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encoding.encode_ordinary_batch(list(texts))]


def _max_seq_length(path: str, tokenizer: Any) -> int:
    config = Path(path) / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 512)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else 512


def encoder_counter(ref: str = DEFAULT_ENCODER) -> tuple[HFTokenCounter, int]:
    """The encoder's tokenizer as a counter, and how many content tokens one text may hold
    (max_seq_length minus the special tokens the encoder adds)."""
    from transformers import AutoTokenizer

    path = resolve_encoder_path(ref)
    tokenizer = AutoTokenizer.from_pretrained(path)
    special = len(tokenizer("", add_special_tokens=True)["input_ids"])
    limit = _max_seq_length(path, tokenizer) - special
    tokenizer.model_max_length = 1 << 30  # we count long texts on purpose; no length warnings
    return HFTokenCounter(tokenizer, ref), limit


_warned: set[str] = set()


def prompt_counter(encoding: str | None, fallback: TokenCounter) -> TokenCounter:
    """tiktoken's ``encoding`` when it can be loaded offline, ``fallback`` otherwise (one warning
    per encoding name and process). ``encoding=None`` means: use the fallback, no warning."""
    if not encoding:
        return fallback
    reason = None
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        reason = "TIKTOKEN_CACHE_DIR is not set"
    else:
        try:
            import tiktoken

            return TiktokenCounter(tiktoken.get_encoding(encoding))
        except Exception as exc:  # noqa: BLE001 - any failure means: not available here
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if encoding not in _warned:
        _warned.add(encoding)
        log.warning(
            "tiktoken encoding %r unavailable (%s); counting prompt tokens with %s", encoding, reason, fallback.name
        )
    return fallback
