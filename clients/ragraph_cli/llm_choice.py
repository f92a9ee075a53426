"""Which LLM ``ragraph up`` serves: the default hub model when it loads offline, a model the
user names (hub id or local directory), or the tiny random-weight stand-in, with a warning."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .stack import StackError

DEFAULT_LLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # the LLM service's own default
DEFAULT_MODELS_DIR = Path(".ragraph/models")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class ModelChoice:
    """What ``serve llm --model`` gets; ``tiny`` when it is the random-weight stand-in."""

    model: str
    tiny: bool = False
    reason: str = ""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_model_cached(repo_id: str) -> bool:
    """True when config, tokenizer and weights of a hub model are in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def cached(name: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo_id, name), str)
        except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
            return False

    return (
        cached("config.json")
        and (cached("tokenizer.json") or cached("tokenizer_config.json"))
        and any(cached(w) for w in _WEIGHTS)
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def build_tiny(models_dir: Path = DEFAULT_MODELS_DIR, say: Callable[[str], None] | None = None) -> Path:
    """The tiny random-weight LLM in ``models_dir/tiny-llm``, built on first use (a few seconds)."""
    path = Path(models_dir) / "tiny-llm"
    if not (path / "config.json").is_file():
        if say:
            say(f"building a tiny random-weight LLM into {path} (a few seconds, once) ...")
        from ragraph_llm.tiny import build_tiny_llm

        build_tiny_llm(path, kind="tiny")
    return path.resolve()


def resolve_llm_model(
    requested: str | None, models_dir: Path = DEFAULT_MODELS_DIR, say: Callable[[str], None] | None = None
) -> ModelChoice:
    """The model to serve. ``None`` means the default hub model when it loads offline, else the tiny
    stand-in; ``tiny`` forces the stand-in; a path must exist; another hub id must be cached unless
    the hub is reachable (HF_HUB_OFFLINE unset)."""
    if requested == "tiny":
        return ModelChoice(str(build_tiny(models_dir, say)), tiny=True, reason="--llm-model tiny was given")
    if requested is not None and _looks_like_path(requested):
        path = Path(requested).expanduser()
        if not (path / "config.json").is_file():
            raise StackError(f"--llm-model {requested}: no save_pretrained model there (config.json missing)")
        return ModelChoice(str(path.resolve()))
    model = requested or DEFAULT_LLM_MODEL
    if hub_model_cached(model):
        return ModelChoice(model)
    if requested is not None:
        if _offline():
            raise StackError(
                f"--llm-model {model} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                f"download it where there is network (huggingface-cli download {model}), pass a local "
                "save_pretrained directory, or --llm-model tiny"
            )
        return ModelChoice(model, reason="not cached: the llm service downloads it from the hub")
    reason = f"{model} is not in the local Hugging Face cache"
    return ModelChoice(str(build_tiny(models_dir, say)), tiny=True, reason=reason)


def tiny_warning(choice: ModelChoice, color: bool = False) -> str:
    """The boxed warning printed when the llm service runs the random-weight stand-in."""
    lines = [
        "WARNING: THE LLM IS A TINY RANDOM-WEIGHT MODEL - ANSWERS ARE RANDOM TOKENS",
        "",
        f"Why: {choice.reason}.",
        f"Serving instead: {choice.model}",
        "Still real: the encoder (embeddings), retrieval from the store, the",
        "query guard and the answer classifier; only the generated text is noise.",
        f"Real answers: fill the HF cache (huggingface-cli download {DEFAULT_LLM_MODEL}",
        "where there is network), or pass --llm-model ID|PATH.",
    ]
    width = max(len(line) for line in lines)
    box = ["#" * (width + 6), *(f"## {line:<{width}} ##" for line in lines), "#" * (width + 6)]
    text = "\n".join(box)
    return f"\033[1;31m{text}\033[0m" if color else text

