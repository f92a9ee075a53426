"""``ragraph up`` / ``ask`` / ``graph check`` end to end: ``up`` as a real subprocess on free
ports with the tiny LLM, a small ingest into its store, questions through the router (whole and
streamed), the contract check, then SIGINT stops all three children. Plus the ``Stack`` failure
path (a child that dies) with stand-in children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ragraph_cli.ports import free_ports, port_open
from ragraph_cli.stack import Stack, StackConfig, StackError

from tests.fixtures.servers import REPO

OPS = REPO / "bench" / "retrieval" / "corpus" / "ops"
QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"}


@dataclass
class Up:
    process: subprocess.Popen[str]
    ports: tuple[int, int, int]
    store: str
    lines: list[str] = field(default_factory=list)

    @property
    def encoder_url(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def llm_url(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def router_url(self) -> str:
        return f"127.0.0.1:{self.ports[2]}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def all_ports(self) -> list[int]:
        enc, llm, router = self.ports
        return [enc - 1, enc, enc + 1, llm - 1, llm, llm + 1, router]


def _pump(up: Up) -> None:
    assert up.process.stdout is not None
    for line in up.process.stdout:
        up.lines.append(line.rstrip("\n"))


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ragraph(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragraph_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=ENV,
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    ports = free_ports()
    store = f"local://{root}/store"
    cmd = [
        sys.executable,
        "-m",
        "ragraph_cli.main",
        "up",
        "--llm-model",
        str(tiny_llm_dir),
        "--device",
        "cpu",
        "--encoder-port",
        str(ports[0]),
        "--llm-port",
        str(ports[1]),
        "--router-port",
        str(ports[2]),
        "--store",
        store,
        "--grace",
        "10",
    ]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=ENV, start_new_session=True
    )
    handle = Up(process, ports, store)
    threading.Thread(target=_pump, args=(handle,), daemon=True).start()
    deadline = time.monotonic() + 150
    while not any(line.startswith("ragraph is up") for line in handle.lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"ragraph up did not come up (exit {process.poll()}):\n{handle.output()[-6000:]}")
        time.sleep(0.1)
    try:
        yield handle
    finally:
        if process.poll() is None:  # a failed test: make sure nothing is left behind
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ingested(up: Up) -> Up:
    result = _ragraph("ingest", str(OPS), "--store", up.store, "--encoder-url", up.encoder_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 4
    return up


def test_up_prints_a_banner_with_the_urls_and_streams_prefixed_logs(up: Up) -> None:
    text = up.output()
    assert f"router   {up.router_url}" in text and f"encoder  {up.encoder_url}" in text
    assert f"llm      {up.llm_url}" in text and up.store in text
    for name in ("encoder", "llm", "router"):
        assert f"ragraph up: {name} ready after" in text
        assert any(line.startswith(f"{name:<7} | ") for line in up.lines), name
    assert "RANDOM TOKENS" not in text  # a local model directory was given: no fallback warning


def test_ask_json_answers_with_sources(ingested: Up) -> None:
    result = _ragraph("ask", QUESTION, "--router-url", ingested.router_url, "--json", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"answer", "sources", "label", "guard", "parameters", "nodes"}
    assert out["answer"] and out["parameters"]["completion_tokens"] == 8
    assert out["sources"][0]["doc_id"] == "backup-restore.md"
    assert [s["n"] for s in out["sources"]] == list(range(1, len(out["sources"]) + 1))
    assert out["guard"] == "benign" and out["label"] in {"answered", "refused", "off_topic"}
    assert list(out["nodes"])[:2] == ["guard", "switch"] and out["nodes"]["generate"]["status"] == "ok"
    assert out["parameters"]["debug"]["ttft_ms"] > 0  # debug=true was asked for: timings are there


def test_ask_stream_prints_deltas_then_sources_and_timings(ingested: Up) -> None:
    args = ("ask", QUESTION, "--router-url", ingested.router_url, "--max-tokens", "12", "--temperature", "0")
    streamed = _ragraph(*args, "--stream")
    whole = _ragraph(*args, "--json")
    assert streamed.returncode == 0 and whole.returncode == 0, streamed.stderr + whole.stderr
    answer = json.loads(whole.stdout)["answer"]
    text = streamed.stdout
    assert text.startswith(answer + "\n")  # greedy: the streamed deltas make the same answer
    assert text.index("sources:") > len(answer)
    assert "[1] backup-restore.md #" in text and "guard: benign" in text
    assert "ttft " in text and "12 tokens" in text and "tokens/s" in text
    assert "nodes (ms): guard " in text and "generate " in text


def test_ask_errors_are_one_readable_line(ingested: Up) -> None:
    bad = _ragraph("ask", QUESTION, "--router-url", ingested.router_url, "--max-tokens", "-1")
    assert bad.returncode == 1 and bad.stderr.startswith("ragraph: INVALID_ARGUMENT: parameter 'max_tokens'")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_graph_check_passes_against_the_live_nodes(up: Up) -> None:
    env_args = ("--encoder-url", up.encoder_url, "--llm-url", up.llm_url)
    ok = _ragraph("graph", "check", *env_args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK")
    as_json = json.loads(_ragraph("graph", "check", *env_args, "--json").stdout)
    assert as_json["ok"] is True and as_json["problems"] == []
    assert {m["url"] for m in as_json["models"]} == {up.encoder_url, up.llm_url}


def test_up_guards_its_nodes_with_a_token_generated_for_the_run(up: Up) -> None:
    import stat

    from ragraph_client.client import InferenceClient
    from ragraph_client.errors import Unauthenticated

    assert "the nodes need a service token, generated for this run" in up.output()
    files = [REPO / ".ragraph" / "tokens" / f"127.0.0.1_{port}" for port in up.ports[:2]]
    token = files[0].read_text().strip()
    assert len(token) >= 40 and files[1].read_text().strip() == token
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert token not in up.output()  # never printed
    for url, model in ((up.encoder_url, "encoder"), (up.llm_url, "llm")):
        with InferenceClient(url, timeout=30) as client:
            assert client.model_ready(model) is True  # health stays open
            with pytest.raises(Unauthenticated, match="^missing or wrong service token$"):
                client.metadata(model)
        with InferenceClient(url, timeout=30, headers={"x-ragraph-service-token": token}) as client:
            assert client.metadata(model).inputs


def test_a_second_up_on_busy_ports_fails_fast(up: Up, tiny_llm_dir: Path) -> None:
    enc, llm, router = up.ports
    again = _ragraph(
        "up",
        "--llm-model",
        str(tiny_llm_dir),
        "--encoder-port",
        str(enc),
        "--llm-port",
        str(llm),
        "--router-port",
        str(router),
        timeout=30,
    )
    assert again.returncode == 1 and f"{enc} (encoder gRPC)" in again.stderr and "already in use" in again.stderr


def test_sigint_stops_all_three_children(up: Up) -> None:
    children = _children(up.process.pid)
    assert len(children) == 3 and all(_alive(pid) for pid in children)
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(40) == 0, up.output()[-3000:]
    time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]
    assert not [port for port in up.all_ports() if port_open(port)]
    assert "ragraph up: stopped (exit codes: encoder 0, llm 0, router 0)" in up.output()
    assert not [p for p in up.ports[:2] if (REPO / ".ragraph" / "tokens" / f"127.0.0.1_{p}").exists()]


FAKE_PYTHON = """\
#!{python}
# Stands in for the interpreter running each child: the llm fails at once, the others wait.
import sys, time
args = sys.argv[1:]
if args[0] == "-c":  # the death-signal wrapper: -c CODE PARENT_PID PYTHON -m ragraph_cli.main serve NAME ...
    args = args[4:]
name = args[3]
if name == "llm":
    print("llm: no such model", flush=True)
    sys.exit(3)
time.sleep(60)
"""


def test_stack_names_the_child_that_died_and_stops_the_others(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    enc, llm, router = free_ports()
    stack = Stack(StackConfig(encoder_port=enc, llm_port=llm, router_port=router), log=None, python=str(fake))
    stack.start()
    try:
        with pytest.raises(StackError) as info:
            stack.wait_ready(timeout=30)
        assert info.value.name == "llm" and "llm exited with code 3" in str(info.value)
        assert "llm: no such model" in str(info.value)
    finally:
        codes = stack.stop(grace=5)
    assert codes["llm"] == 3 and codes["encoder"] == -signal.SIGTERM and codes["router"] == -signal.SIGTERM


def test_stack_refuses_busy_ports() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stack = Stack(StackConfig(router_port=port), log=None)
        with pytest.raises(StackError, match=f"{port} \\(router gRPC\\)"):
            stack.start()
    assert all(c.process is None for c in stack.children.values())
