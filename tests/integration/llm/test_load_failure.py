"""A node whose model cannot load stops with a non-zero exit status (an orchestrator restarts it
or reports it), and its log names the cause."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.fixtures.servers import free_port, serve_command


def test_llm_that_cannot_load_exits_non_zero(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    cmd = serve_command(["llm", "--model", str(missing)], free_port(), free_port(), free_port())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-2000:]
    assert f"model '{missing}': no such GGUF file" in log
    assert "model(s) llm failed to load" in log
