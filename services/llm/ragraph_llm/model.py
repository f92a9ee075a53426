"""Loading a causal LM and its tokenizer, and turning a request into prompt token ids that fit
the context window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ragraph_client.errors import InvalidArgument
from ragraph_serving.device import pick_device

from . import weights
from .gguf import default_cache_dir, find_gguf, load_gguf
from .settings import LLMSettings
from .sources import AUTO, ModelSourceError, resolve_auto

log = logging.getLogger("ragraph.llm")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise InvalidArgument(f"dtype must be auto, float32, bfloat16 or float16, got '{name}'") from None


@dataclass
class Prompt:
    ids: list[int]
    passages_used: int
    context_truncated: bool


class LanguageModel:
    """A Hugging Face causal LM and its tokenizer: ``from_pretrained`` of a hub id or directory, or a
    GGUF file through the converted-weights cache (:mod:`ragraph_llm.gguf`); ``auto`` resolved
    first (:mod:`ragraph_llm.sources`). ``name`` is what was loaded."""

    def __init__(self, settings: LLMSettings) -> None:
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.dtype, self.device)
        self.name = settings.model
        if settings.model == AUTO:
            if settings.gguf_file:
                raise ModelSourceError(
                    f"gguf_file '{settings.gguf_file}' needs a model directory or hub id; the model is 'auto'"
                )
            chosen = resolve_auto()
            log.info("model 'auto': serving %s (%s)", chosen.name, chosen.reason)
            self.name = chosen.model
        gguf_path = find_gguf(self.name, settings.gguf_file)
        model: Any
        if gguf_path is not None:
            self.name = str(gguf_path)
            cache_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
            model, self.tokenizer = load_gguf(gguf_path, cache_dir, self.dtype)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            remote = settings.trust_remote_code
            self.tokenizer = AutoTokenizer.from_pretrained(self.name, trust_remote_code=remote)
            model = AutoModelForCausalLM.from_pretrained(self.name, dtype=self.dtype, trust_remote_code=remote)
        self.model = model.to(self.device)
        self.model.eval()
        self.weights = weights.choose(
            self.model, self.device, settings.dtype, weights.requested(settings), settings.max_batch_size
        )
        weights.log_choice(self.weights)
        self.dtype = self.weights.dtype
        self.window = settings.context_window or self._window_from_config()
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        log.info(
            "loaded %s on %s (%s), window %d tokens, chat template: %s",
            self.name,
            self.device,
            self.dtype,
            self.window,
            self.has_chat_template,
        )

    def _window_from_config(self) -> int:
        config = self.model.config.get_text_config()
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", 0)
        return int(limit) if 0 < limit < 1_000_000 else 2048

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    def _pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, *sorted(self.eos_ids), 0):
            if isinstance(value, int):
                return value
        return 0

    # -- prompts ------------------------------------------------------------------------------

    def render(self, prompt: str | None, messages: list[dict[str, str]] | None, passages: list[str]) -> str:
        """The prompt text: chat messages through the tokenizer's chat template when it has one
        (plain ``role: content`` lines otherwise), with passages placed before the question."""
        block = "".join(f"[{i + 1}] {p}\n" for i, p in enumerate(passages))
        if messages is None:
            assert prompt is not None
            return f"Context:\n{block}\n{prompt}" if passages else prompt
        msgs = [dict(m) for m in messages]
        if passages:
            note = f"Use the following context to answer.\nContext:\n{block}"
            if msgs and msgs[0]["role"] == "system":
                msgs[0]["content"] = f"{msgs[0]['content']}\n\n{note}"
            else:
                msgs.insert(0, {"role": "system", "content": note})
        if self.has_chat_template:
            return str(self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"

    def encode(self, text: str, templated: bool = False) -> list[int]:
        """Token ids; text rendered by a chat template already holds its special tokens."""
        return list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])

    def build_prompt(
        self, prompt: str | None, messages: list[dict[str, str]] | None, passages: list[str], max_tokens: int
    ) -> Prompt:
        """Prompt ids within ``window - max_tokens``: passages are dropped from the end first,
        then the prompt is cut from the left (its end, with the question, is kept)."""
        if max_tokens >= self.window:
            raise InvalidArgument(
                f"parameter 'max_tokens' is {max_tokens}, which leaves no room for a prompt in the model's "
                f"context window of {self.window} tokens"
            )
        budget = self.window - max_tokens
        used = len(passages)
        templated = messages is not None and self.has_chat_template
        ids = self.encode(self.render(prompt, messages, passages), templated)
        while len(ids) > budget and used > 0:
            # Dropping one at a time keeps as many passages as fit; halve first when far over.
            used = used // 2 if len(ids) > 2 * budget and used > 1 else used - 1
            ids = self.encode(self.render(prompt, messages, passages[:used]), templated)
        truncated = used < len(passages)
        if len(ids) > budget:
            ids, truncated = ids[-budget:], True
        if not ids:
            raise InvalidArgument("input 'prompt' is empty once tokenized")
        return Prompt(ids, used, truncated)
