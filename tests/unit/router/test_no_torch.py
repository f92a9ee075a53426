"""The router runs no model: importing it, building its token counters and its prompt budget
must not import torch (its image has none), checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

CHECK = """
import sys
import ragraph_router.server, ragraph_router.executor, ragraph_router.service, ragraph_router.rest
import ragraph_cli.main, ragraph_retrieval.ingest, ragraph_retrieval.local
from ragraph_retrieval.tokens import encoder_counter, prompt_counter
counter, limit = encoder_counter()
assert counter.count("hello world") == 2 and limit == 254, (counter.count("hello world"), limit)
prompt_counter("cl100k_base", counter)
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "mlserver") if m in sys.modules)
print("heavy:", heavy)
assert not heavy, heavy
"""


def test_router_imports_and_counts_tokens_without_torch() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": ""}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heavy: []" in done.stdout


def test_the_check_fails_when_torch_is_imported() -> None:
    """The same check sees torch when something imports it (the check can fail)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": ""}
    code = "import torch\n" + CHECK
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "heavy: ['torch']" in done.stdout
