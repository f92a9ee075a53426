"""`ragraph serve encoder|llm` on an install without that node's extra (the router image, or
`pip install ragraph`): one line naming the extra to install, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = (
    "import sys\n"
    "sys.modules[{missing!r}] = None  # as if the extra's package were not installed\n"
    "from ragraph_cli.main import main\n"
    "sys.exit(main(['serve', {node!r}, '--grpc-port', '0', '--http-port', '0', '--metrics-port', '0']))\n"
)


@pytest.mark.parametrize(("node", "missing"), [("encoder", "mlserver"), ("llm", "torch")])
def test_serve_without_the_extra_names_it(node: str, missing: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(node=node, missing=missing)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"serving the {node} needs the '{node}' extra ({missing} is not installed)" in done.stderr
    assert f"pip install 'ragraph[{node}]'" in done.stderr
    assert "Traceback" not in done.stderr
