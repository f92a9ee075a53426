"""Token counting, one interface for every place that budgets tokens.

* Chunk sizes are counted with the encoder's own tokenizer (:func:`encoder_counter`), since that
  is the tokenizer that truncates. It is loaded with ``tokenizers`` alone (the model's
  ``tokenizer.json``): no torch, no transformers, so the router image carries neither.
* Prompt budgets are estimated with tiktoken (:func:`prompt_counter`, ``cl100k_base`` by
  default), read only from ``TIKTOKEN_CACHE_DIR`` (the router image bakes the file there at build
  time): this module never lets tiktoken download. Without that variable, or when the file is not
  there, the caller's fallback tokenizer (the LLM's or the encoder's) counts instead, after one
  warning line naming why.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

# The encoder service resolves its model reference (the bundled all-MiniLM-L6-v2 copy for the
# default id) with this same function, so chunks are counted with the tokenizer that embeds them.
from ragraph_encoder.bundled import resolve_model as resolve_encoder_path
from ragraph_encoder.settings import DEFAULT_MODEL as DEFAULT_ENCODER

log = logging.getLogger("ragraph.tokens")

DEFAULT_TIKTOKEN = "cl100k_base"


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class HFTokenCounter:
    """Counts with a Hugging Face ``tokenizers.Tokenizer``, special tokens excluded."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token (for cutting a text at a token boundary)."""
        return [(a, b) for a, b in self.tokenizer.encode(text, add_special_tokens=False).offsets]


class TiktokenCounter:
    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encoding.encode_ordinary_batch(list(texts))]


def _max_seq_length(path: Path) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer config's model_max_length, else 512."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        config = path / name
        if config.exists():
            value = json.loads(config.read_text()).get(key)
            if isinstance(value, int) and 0 < value < 1_000_000:
                return value
    return 512


def _load_tokenizer(ref: str, path: str) -> tuple[Any, Path | None]:
    """The fast tokenizer of a model directory (its tokenizer.json) or hub id (from the HF cache,
    or downloaded unless HF_HUB_OFFLINE), with truncation and padding off: we count long texts on
    purpose."""
    from tokenizers import Tokenizer

    local = Path(path)
    if local.is_dir():
        file = local / "tokenizer.json"
        if not file.exists():
            raise FileNotFoundError(f"encoder model {ref!r}: {file} not found (a fast tokenizer is needed)")
        tokenizer = Tokenizer.from_file(str(file))
        directory: Path | None = local
    else:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(path, allow_patterns=["tokenizer.json", "*config*.json"]))
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer, directory


def encoder_counter(ref: str = DEFAULT_ENCODER) -> tuple[HFTokenCounter, int]:
    """The encoder's tokenizer as a counter, and how many content tokens one text may hold
    (max_seq_length minus the special tokens the encoder adds)."""
    tokenizer, directory = _load_tokenizer(ref, resolve_encoder_path(ref))
    special = len(tokenizer.encode("", add_special_tokens=True).ids)
    limit = (_max_seq_length(directory) if directory else 512) - special
    return HFTokenCounter(tokenizer, ref), limit


@contextmanager
def _no_download() -> Iterator[None]:
    """tiktoken reads its cache; where it would fetch a URL instead, it fails at once."""
    import tiktoken.load

    fetch = tiktoken.load.read_file

    def refuse(blobpath: str) -> bytes:
        if "://" in blobpath:
            cache = os.environ.get("TIKTOKEN_CACHE_DIR")
            raise FileNotFoundError(f"not in TIKTOKEN_CACHE_DIR={cache} (no download: it would fetch {blobpath})")
        return fetch(blobpath)

    tiktoken.load.read_file = refuse
    try:
        yield
    finally:
        tiktoken.load.read_file = fetch


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

            with _no_download():
                return TiktokenCounter(tiktoken.get_encoding(encoding))
        except Exception as exc:  # noqa: BLE001 - any failure means: not available here
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if encoding not in _warned:
        _warned.add(encoding)
        log.warning(
            "tiktoken encoding %r unavailable (%s); counting prompt tokens with %s", encoding, reason, fallback.name
        )
    return fallback
