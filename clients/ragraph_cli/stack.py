"""The whole graph (encoder, llm, router) as child processes on loopback: what ``ragraph up`` runs.

The core is :class:`Stack`, reusable from Python (``make demo`` and the tests use it)::

    choice = resolve_llm_model(None)
    config = StackConfig(llm_model=choice.model, llm_gguf_file=choice.gguf_file, store="local://.ragraph/demo-store")
    with Stack(config, log=None) as stack:      # start() + wait_ready(); stop() on exit
        print(stack.router_url)

Each child is ``python -m ragraph_cli.main serve NAME``; the encoder and the llm also get an HTTP
port (gRPC port - 1) and a metrics port (gRPC port + 1). The router finds the other two and the
store through ``RAGRAPH_ENCODER_URL``, ``RAGRAPH_LLM_URL`` and ``RAGRAPH_STORE``. The nodes
require a service token generated per stack (``Stack.service_token``; the router gets it as its
node token), written for ``ragraph ingest`` / ``search`` to ``.ragraph/tokens/`` (see
:mod:`ragraph_cli.tokens`) while the stack runs. Children run in
sessions of their own (only the stack signals them: SIGTERM, then SIGKILL after a grace period)
and, on Linux, get SIGTERM if the process that started them dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from . import tokens
from .ports import connect_host, port_free, port_open

DEFAULT_STORE = "local://.ragraph/store"
NAMES = ("encoder", "llm", "router")
_WIDTH = max(len(n) for n in NAMES)
_COLORS = {"encoder": "36", "llm": "35", "router": "33"}  # cyan, magenta, yellow

# Run in the child before exec: ask the kernel for SIGTERM when the parent dies (survives exec),
# and give up at once when the parent is already gone. No preexec_fn: it is unsafe with threads.
_DEATH_SIGNAL_WRAPPER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # PR_SET_PDEATHSIG
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class StackError(RuntimeError):
    """A child could not start, died, or was not ready in time; ``name`` is the child (or None)."""

    def __init__(self, message: str, name: str | None = None, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.tail = tail or []

    def report(self, prefix: str, log: object, out: TextIO = sys.stderr, lines: int = 20) -> None:
        """``prefix: message; last lines of LOG:`` and the child's last ``lines`` lines."""
        print(f"\n{prefix}: {self}; last lines of {log}:", file=out)
        for line in self.tail[-lines:]:
            print(f"  {self.name} | {line}", file=out)


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    encoder_port: int = 8101
    llm_port: int = 8201
    router_port: int = 8301
    llm_model: str | None = None  # passed as is to ``serve llm --model`` (None: the service's default)
    llm_gguf_file: str | None = None  # RAGRAPH_LLM_GGUF_FILE of the llm: a GGUF file inside llm_model
    encoder_model: str | None = None
    store: str = DEFAULT_STORE
    graph: str | None = None
    device: str | None = None  # encoder and llm: auto | cpu | cuda
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every child
    service_token: str | None = None  # the nodes' token (None: one generated per stack)


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    reader: threading.Thread | None = None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()


class Stack:
    """Encoder, llm and router as child processes. ``log`` gets every child line with a
    ``name | `` prefix (None: kept only as a tail for error messages)."""

    def __init__(
        self,
        config: StackConfig | None = None,
        *,
        log: TextIO | None = sys.stdout,
        color: bool | None = None,
        python: str = sys.executable,
        cwd: str | Path | None = None,
    ) -> None:
        self.config = config or StackConfig()
        self.log = log
        self.color = color if color is not None else bool(log and log.isatty() and "NO_COLOR" not in os.environ)
        self.python = python
        self.cwd = cwd
        self._lock = threading.Lock()
        self.service_token = self.config.service_token or tokens.generate()
        self.children = {name: Child(name, *self._command(name)) for name in NAMES}
        self.started_at: float | None = None
        self.ready_s: float | None = None

    # addresses
    @property
    def encoder_url(self) -> str:
        return f"{connect_host(self.config.host)}:{self.config.encoder_port}"

    @property
    def llm_url(self) -> str:
        return f"{connect_host(self.config.host)}:{self.config.llm_port}"

    @property
    def router_url(self) -> str:
        return f"{connect_host(self.config.host)}:{self.config.router_port}"

    def ports(self) -> dict[int, str]:
        c = self.config
        return {
            c.encoder_port - 1: "encoder HTTP",
            c.encoder_port: "encoder gRPC",
            c.encoder_port + 1: "encoder metrics",
            c.llm_port - 1: "llm HTTP",
            c.llm_port: "llm gRPC",
            c.llm_port + 1: "llm metrics",
            c.router_port - 1: "router REST",
            c.router_port: "router gRPC",
            c.router_port + 1: "router metrics",
        }

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        c = self.config
        cmd = [self.python, "-m", "ragraph_cli.main", "serve", name, "--host", c.host]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **c.env}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # The children share the machine's cores. torch's OpenMP workers spin-wait between
        # parallel regions by default, so each service's idle workers burn the cores the others
        # need: `make loadtest` made 3.3 requests/s with spinning and 16.3 with passive waits
        # (docs/benchmarks.md). A service on cores of its own keeps the default (it is faster).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # and the encoder's bulk batches (ragraph ingest) leave a core to the llm and the router
        env.setdefault("RAGRAPH_ENCODER_BULK_THREADS", "1")
        port = {"encoder": c.encoder_port, "llm": c.llm_port, "router": c.router_port}[name]
        cmd += ["--grpc-port", str(port), "--http-port", str(port - 1), "--metrics-port", str(port + 1)]
        if name in ("encoder", "llm"):
            env[f"RAGRAPH_{name.upper()}_SERVICE_TOKEN"] = self.service_token
            model = c.encoder_model if name == "encoder" else c.llm_model
            if model:
                cmd += ["--model", model]
            if name == "llm":  # set or cleared: an inherited one must not apply to another model
                env.pop("RAGRAPH_LLM_GGUF_FILE", None)
                if c.llm_gguf_file:
                    env["RAGRAPH_LLM_GGUF_FILE"] = c.llm_gguf_file
            if c.device:
                cmd += ["--device", c.device]
        else:
            if c.graph:
                cmd += ["--graph", c.graph]
            env.update(RAGRAPH_ENCODER_URL=self.encoder_url, RAGRAPH_LLM_URL=self.llm_url, RAGRAPH_STORE=c.store)
            env["RAGRAPH_ROUTER_NODE_TOKEN"] = self.service_token
        return cmd, env

    # output
    def _prefix(self, name: str) -> str:
        label = f"{name:<{_WIDTH}}"
        return f"\033[{_COLORS.get(name, '0')}m{label}\033[0m | " if self.color else f"{label} | "

    def say(self, text: str, stream: TextIO | None = None) -> None:
        """A line of the stack's own, written under the log lock (never interleaved with a child's)."""
        out = stream or self.log
        if out is not None:
            self._write(out, text)

    def _write(self, out: TextIO, text: str) -> None:
        with self._lock:
            try:
                out.write(text + "\n")
                out.flush()
            except (OSError, ValueError):  # a closed pipe or file: keep going without the log
                if out is self.log:
                    self.log = None

    def _pump(self, child: Child) -> None:
        """Copy the child's output line by line (always drained, so a child never blocks on it)."""
        assert child.process is not None and child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(line)
            log = self.log
            if log is not None:
                self._write(log, self._prefix(child.name) + line)
        child.process.stdout.close()

    # lifecycle
    def check_ports(self) -> None:
        busy = [f"{port} ({what})" for port, what in self.ports().items() if not port_free(port, self.config.host)]
        if busy:
            raise StackError(
                f"already in use on {self.config.host}: {', '.join(busy)}; is another stack running? "
                "pick other ports (--encoder-port, --llm-port, --router-port)"
            )

    def start(self) -> None:
        """Check the ports, then start all three children (the router waits for the others itself)."""
        self.check_ports()
        self.started_at = time.monotonic()
        for url in (self.encoder_url, self.llm_url):
            tokens.write_token(url, self.service_token, self._root())
        for child in self.children.values():
            cmd = child.cmd
            if sys.platform.startswith("linux"):
                cmd = [self.python, "-c", _DEATH_SIGNAL_WRAPPER, str(os.getpid()), *cmd]
            child.process = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child.env,
                cwd=self.cwd,
                start_new_session=True,
            )
            child.reader = threading.Thread(target=self._pump, args=(child,), name=f"log-{child.name}", daemon=True)
            child.reader.start()

    def dead(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children.values() if c.returncode is not None), None)

    def _died(self, child: Child) -> StackError:
        if child.reader is not None:
            child.reader.join(2)  # let its last lines through
        tail = list(child.tail)[-30:]
        message = f"{child.name} exited with code {child.returncode}"
        if self.log is None and tail:
            message += ":\n" + "\n".join(f"  {child.name} | {line}" for line in tail)
        return StackError(message, child.name, tail)

    def _is_ready(self, name: str, client: Any) -> bool:
        if name == "encoder":
            return bool(client.model_ready("encoder") and client.model_ready("classifier"))
        if name == "llm":
            return bool(client.model_ready("llm"))
        return bool(client.ready())

    def wait_ready(
        self,
        timeout: float = 600.0,
        stop: threading.Event | None = None,
        on_ready: Callable[[str, float], None] | None = None,
    ) -> bool:
        """Until encoder and llm report their models ready over gRPC and the router reports
        ServerReady (all its nodes passed the contract check). False if ``stop`` was set first;
        StackError when a child dies or time runs out."""
        from ragraph_client.client import InferenceClient
        from ragraph_client.errors import RagraphError

        started = self.started_at or time.monotonic()
        deadline = time.monotonic() + timeout
        urls = {"encoder": self.encoder_url, "llm": self.llm_url, "router": self.router_url}
        clients: dict[str, InferenceClient] = {}
        pending = list(NAMES)
        try:
            while pending:
                if stop is not None and stop.is_set():
                    return False
                dead = self.dead()
                if dead is not None:
                    raise self._died(dead)
                for name in list(pending):
                    host, _, port = urls[name].rpartition(":")
                    # open the channel only once the port listens: a channel that failed to
                    # connect backs off (up to minutes) before it tries again
                    if name not in clients:
                        if not port_open(int(port), host):
                            continue
                        clients[name] = InferenceClient(urls[name], timeout=2.0)
                    try:
                        ready = self._is_ready(name, clients[name])
                    except RagraphError:
                        ready = False
                    if ready:
                        pending.remove(name)
                        if on_ready:
                            on_ready(name, time.monotonic() - started)
                if pending and time.monotonic() > deadline:
                    raise StackError(f"not ready after {timeout:.0f}s: {', '.join(pending)}", pending[0])
                if pending:
                    time.sleep(0.25)
        finally:
            for client in clients.values():
                client.close()
        self.ready_s = time.monotonic() - started
        return True

    def wait(self, stop: threading.Event) -> Child | None:
        """Block until ``stop`` is set (None) or a child exits (that child)."""
        while not stop.wait(0.25):
            dead = self.dead()
            if dead is not None:
                if dead.reader is not None:
                    dead.reader.join(2)
                return dead
        return None

    def _signal(self, child: Child, sig: int) -> None:
        if child.process is not None and child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, sig)  # its own session: the child and anything it spawned

    def stop(self, grace: float = 10.0) -> dict[str, int | None]:
        """SIGTERM to every child still running, SIGKILL to those still up after ``grace`` seconds.
        Returns each child's exit code."""
        running = [c for c in self.children.values() if c.process is not None and c.process.poll() is None]
        for child in reversed(running):  # router first: it stops taking requests before its nodes go
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"ragraph up: {child.name} did not stop within {grace:.0f}s, killing it")
                self._signal(child, signal.SIGKILL)
                child.process.wait()
        for child in self.children.values():
            if child.reader is not None:
                child.reader.join(2)
        for url in (self.encoder_url, self.llm_url):
            tokens.remove_token(url, self.service_token, self._root())
        return {name: c.returncode for name, c in self.children.items()}

    def _root(self) -> Path:
        """Where the children run, and ``.ragraph/tokens/`` lives."""
        return Path(self.cwd) if self.cwd is not None else Path.cwd()

    def __enter__(self) -> Stack:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def banner(self, llm_label: str | None = None) -> str:
        c = self.config
        ready = f" (ready in {self.ready_s:.1f}s)" if self.ready_s is not None else ""
        llm = llm_label or c.llm_model or "the llm service's default model"
        graph = c.graph or "the shipped rag graph"
        lines = [
            f"ragraph is up{ready}:",
            f"  router   {self.router_url:<16}  V2 model 'rag' running {graph}  (REST + SSE :{c.router_port - 1}, "
            f"metrics :{c.router_port + 1})",
            f"  encoder  {self.encoder_url:<16}  models 'encoder', 'classifier'  (HTTP :{c.encoder_port - 1}, "
            f"metrics :{c.encoder_port + 1})",
            f"  llm      {self.llm_url:<16}  model 'llm' = {llm}  (HTTP :{c.llm_port - 1}, metrics :{c.llm_port + 1})",
            f"  store    {c.store}",
            f"  token    the nodes need a service token, generated for this run: in {tokens.TOKENS_DIR}/ "
            "(ragraph ingest and search read it there)",
            "try:",
            f"  ragraph ingest docs --store {c.store} --encoder-url {self.encoder_url}",
            f'  ragraph ask "How do I run the whole graph?" --stream --router-url {self.router_url}',
            "Ctrl-C stops all three.",
        ]
        return "\n".join(lines)
