"""Which LLM ``ragraph up`` (and ``make demo``) serves.

Without ``--llm-model``: what the llm service's model ``auto`` stands for on this machine
(:mod:`ragraph_llm.sources`): ``Qwen/Qwen2.5-0.5B-Instruct`` when it is in the local Hugging Face
cache, else the bundled SmolLM2-135M-Instruct GGUF, resolved here so that the banner names it.
A named model (hub id, save_pretrained directory, ``.gguf`` file, or directory / hub id plus a
GGUF file name) is checked before anything starts. ``tiny`` (a random-weight model for fast
tests) is served only when asked for, with a boxed warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragraph_llm.gguf import find_gguf
from ragraph_llm.sources import (
    DEFAULT_HUB_MODEL,
    ModelSourceError,
    hub_file_cached,
    hub_model_cached,
    hub_offline,
    resolve_auto,
)

from .stack import StackError

DEFAULT_LLM_MODEL = DEFAULT_HUB_MODEL  # what the default serves when it is in the local HF cache
DEFAULT_MODELS_DIR = Path(".ragraph/models")


@dataclass
class ModelChoice:
    """What ``serve llm`` gets: ``model`` (``--model``) and ``gguf_file`` (RAGRAPH_LLM_GGUF_FILE);
    ``name`` is for people; ``tiny`` when it is the random-weight stand-in."""

    model: str
    tiny: bool = False
    reason: str = ""
    name: str = ""
    gguf_file: str | None = None

    @property
    def label(self) -> str:
        """The model as the banner names it."""
        if self.tiny:
            return f"{self.model} (TINY RANDOM WEIGHTS)"
        name = self.name or self.model
        return f"{name} ({self.gguf_file})" if self.gguf_file else name


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.endswith(".gguf") or Path(model).expanduser().exists()


def build_tiny(models_dir: Path = DEFAULT_MODELS_DIR, say: Callable[[str], None] | None = None) -> Path:
    """The tiny random-weight LLM in ``models_dir/tiny-llm``, built on first use (a few seconds)."""
    path = Path(models_dir) / "tiny-llm"
    if not (path / "config.json").is_file():
        if say:
            say(f"building a tiny random-weight LLM into {path} (a few seconds, once) ...")
        from ragraph_llm.tiny import build_tiny_llm

        build_tiny_llm(path, kind="tiny")
    return path.resolve()


def _local(requested: str, gguf_file: str | None) -> ModelChoice:
    path = Path(requested).expanduser()
    if not path.exists():
        raise StackError(f"--llm-model {requested}: no such file or directory")
    try:
        found = find_gguf(str(path), gguf_file)
    except ModelSourceError as exc:
        raise StackError(f"--llm-model {requested}: {exc}") from None
    if found is not None:  # the file itself goes to the service: no gguf_file needed there
        return ModelChoice(str(found), name=f"{found.name} (GGUF, {found.parent})")
    if not (path / "config.json").is_file():
        raise StackError(f"--llm-model {requested}: neither a save_pretrained directory (config.json) nor a .gguf file")
    return ModelChoice(str(path.resolve()))


def resolve_llm_model(
    requested: str | None,
    models_dir: Path = DEFAULT_MODELS_DIR,
    say: Callable[[str], None] | None = None,
    gguf_file: str | None = None,
) -> ModelChoice:
    """The model to serve: ``None`` means the default (see the module docstring); ``tiny`` the
    random-weight stand-in; a path must hold a model; a hub id (with ``gguf_file``, that file of
    the repository) must be cached unless the hub may be used (HF_HUB_OFFLINE unset)."""
    if requested == "tiny" or requested is None:
        if gguf_file:
            raise StackError(f"--llm-gguf-file {gguf_file} needs --llm-model DIR or HUB_ID to say whose file it is")
        if requested == "tiny":
            return ModelChoice(str(build_tiny(models_dir, say)), tiny=True, reason="--llm-model tiny was given")
        try:
            chosen = resolve_auto()
        except ModelSourceError as exc:
            raise StackError(str(exc).replace("model 'auto': ", "no --llm-model given and ")) from None
        return ModelChoice(chosen.model, reason=chosen.reason, name=chosen.name)
    if _looks_like_path(requested):
        return _local(requested, gguf_file)
    cached = hub_file_cached(requested, gguf_file) is not None if gguf_file else hub_model_cached(requested)
    if cached:
        return ModelChoice(requested, gguf_file=gguf_file)
    what = f"{requested} (GGUF file {gguf_file})" if gguf_file else requested
    if hub_offline():
        raise StackError(
            f"--llm-model {what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
            f"download it where there is network (huggingface-cli download {requested}"
            f"{' ' + gguf_file if gguf_file else ''}), pass a local directory or .gguf file, or leave out "
            "--llm-model for the default"
        )
    return ModelChoice(requested, gguf_file=gguf_file, reason="not cached: the llm service downloads it from the hub")


def tiny_warning(choice: ModelChoice, color: bool = False) -> str:
    """The boxed warning printed when the llm service runs the random-weight stand-in."""
    lines = [
        "WARNING: THE LLM IS A TINY RANDOM-WEIGHT MODEL - ANSWERS ARE RANDOM TOKENS",
        "",
        f"Why: {choice.reason}.",
        f"Serving: {choice.model}",
        "Still real: the encoder (embeddings), retrieval from the store, the",
        "query guard and the answer classifier; only the generated text is noise.",
        "Real answers: leave out --llm-model (the default serves a real model),",
        "or pass --llm-model ID|DIR|FILE.gguf.",
    ]
    width = max(len(line) for line in lines)
    box = ["#" * (width + 6), *(f"## {line:<{width}} ##" for line in lines), "#" * (width + 6)]
    text = "\n".join(box)
    return f"\033[1;31m{text}\033[0m" if color else text
