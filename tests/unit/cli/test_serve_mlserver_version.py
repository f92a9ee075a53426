"""`ragraph serve encoder` on an MLServer outside the range ragraph's patches are written for: one
line naming the supported range, exit 2, no traceback, on its own ports and under
``MLSERVER_MODELS_DIR`` (the way Seldon Core 2 launches the image) alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = (
    "import sys\n"
    "from ragraph_serving import mlserver_patch\n"
    "mlserver_patch.installed_version = lambda: '1.8.0'  # as if that MLServer were installed\n"
    "from ragraph_cli.main import main\n"
    "sys.exit(main(['serve', 'encoder', '--grpc-port', '0', '--http-port', '0', '--metrics-port', '0']))\n"
)


@pytest.mark.parametrize("models_dir", [False, True], ids=["own-ports", "mlserver-models-dir"])
def test_serve_on_an_unsupported_mlserver_says_which_to_install(tmp_path: Path, models_dir: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
    if models_dir:
        env["MLSERVER_MODELS_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ragraph: ragraph's nodes support MLServer >=1.7.1,<1.8, but mlserver 1.8.0 is installed" in done.stderr
    assert "pip install 'mlserver>=1.7.1,<1.8'" in done.stderr
    assert "Traceback" not in done.stderr
