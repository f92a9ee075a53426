"""``ragraph up``: the whole graph (encoder, llm, router) as child processes on loopback.

The core is :class:`Stack`, reusable from Python (``make demo`` and the tests use it)::

    config = StackConfig(llm_model=resolve_llm_model(None).model, store="local://.ragraph/demo-store")
    with Stack(config, log=None) as stack:      # start() + wait_ready(); stop() on exit
        print(stack.router_url)

Each child is ``python -m ragraph_cli.main serve NAME``; the encoder and the llm also get an HTTP
port (gRPC port - 1) and a metrics port (gRPC port + 1). The router finds the other two and the
store through ``RAGRAPH_ENCODER_URL``, ``RAGRAPH_LLM_URL`` and ``RAGRAPH_STORE``. Children run in
sessions of their own (only the stack signals them: SIGTERM, then SIGKILL after a grace period)
and, on Linux, get SIGTERM if the process that started them dies.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
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

DEFAULT_LLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # the LLM service's own default
DEFAULT_STORE = "local://.ragraph/store"
DEFAULT_MODELS_DIR = Path(".ragraph/models")
NAMES = ("encoder", "llm", "router")
_WIDTH = max(len(n) for n in NAMES)
_COLORS = {"encoder": "36", "llm": "35", "router": "33"}  # cyan, magenta, yellow
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

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


# --- which LLM ------------------------------------------------------------------------------------


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


# --- ports ------------------------------------------------------------------------------------


def connect_host(host: str) -> str:
    """Where clients reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now (SO_REUSEADDR, as gRPC servers bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(host: str = "127.0.0.1") -> tuple[int, int, int]:
    """Free gRPC ports for encoder, llm and router whose neighbours (HTTP -1, metrics +1) are free too."""
    found: list[int] = []
    while len(found) < 3:
        with socket.socket() as sock:
            sock.bind((connect_host(host), 0))
            port = int(sock.getsockname()[1])
        block = {port - 1, port, port + 1}
        if 1024 < port < 65535 and not block & {p + d for p in found for d in (-1, 0, 1)}:
            if all(port_free(p, host) for p in block):
                found.append(port)
    return found[0], found[1], found[2]


# --- the stack --------------------------------------------------------------------------------


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    encoder_port: int = 8101
    llm_port: int = 8201
    router_port: int = 8301
    llm_model: str | None = None  # passed as is to ``serve llm --model`` (None: the service's default)
    encoder_model: str | None = None
    store: str = DEFAULT_STORE
    graph: str | None = None
    device: str | None = None  # encoder and llm: auto | cpu | cuda
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every child


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
            c.encoder_port - 1: "encoder HTTP", c.encoder_port: "encoder gRPC", c.encoder_port + 1: "encoder metrics",
            c.llm_port - 1: "llm HTTP", c.llm_port: "llm gRPC", c.llm_port + 1: "llm metrics",
            c.router_port - 1: "router REST", c.router_port: "router gRPC", c.router_port + 1: "router metrics",
        }  # fmt: skip

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        c = self.config
        cmd = [self.python, "-m", "ragraph_cli.main", "serve", name, "--host", c.host]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **c.env}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        port = {"encoder": c.encoder_port, "llm": c.llm_port, "router": c.router_port}[name]
        cmd += ["--grpc-port", str(port), "--http-port", str(port - 1), "--metrics-port", str(port + 1)]
        if name in ("encoder", "llm"):
            model = c.encoder_model if name == "encoder" else c.llm_model
            if model:
                cmd += ["--model", model]
            if c.device:
                cmd += ["--device", c.device]
        else:
            if c.graph:
                cmd += ["--graph", c.graph]
            env.update(RAGRAPH_ENCODER_URL=self.encoder_url, RAGRAPH_LLM_URL=self.llm_url, RAGRAPH_STORE=c.store)
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
        return {name: c.returncode for name, c in self.children.items()}

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
            "try:",
            f"  ragraph ingest docs --store {c.store} --encoder-url {self.encoder_url}",
            f'  ragraph ask "How do I run the whole graph?" --stream --router-url {self.router_url}',
            "Ctrl-C stops all three.",
        ]
        return "\n".join(lines)


# --- the command ------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        choice = resolve_llm_model(args.llm_model, Path(args.models_dir), say)
    except StackError as exc:
        print(f"ragraph up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if choice.tiny:
        say(tiny_warning(choice, color))
    elif choice.reason:
        say(f"ragraph up: llm model {choice.model}: {choice.reason}")
    config = StackConfig(
        host=args.host,
        encoder_port=args.encoder_port,
        llm_port=args.llm_port,
        router_port=args.router_port,
        llm_model=choice.model,
        encoder_model=args.encoder_model,
        store=args.store,
        graph=args.graph,
        device=args.device,
    )
    stack = Stack(config, log=sys.stdout, color=color)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    code = 0
    try:
        stack.start()
        stack.say(f"ragraph up: starting encoder, llm and router (llm model: {choice.model}) ...")
        ready = stack.wait_ready(
            args.ready_timeout, stop, on_ready=lambda name, s: stack.say(f"ragraph up: {name} ready after {s:.1f}s")
        )
        if ready:
            label = f"{choice.model} (TINY RANDOM WEIGHTS)" if choice.tiny else choice.model
            stack.say(stack.banner(label))
            dead = stack.wait(stop)
            if dead is not None:
                others = " and ".join(c.name for c in stack.children.values() if c is not dead)
                stack.say(f"ragraph up: {dead.name} exited with code {dead.returncode}; stopping {others}", sys.stderr)
                code = 1
    except StackError as exc:
        stack.say(f"ragraph up: {exc}; stopping the others", sys.stderr)
        code = 1
    finally:
        if any(c.process is not None for c in stack.children.values()):
            stack.say("ragraph up: stopping router, llm and encoder ...")
            codes = stack.stop(args.grace)
            stack.say("ragraph up: stopped (exit codes: " + ", ".join(f"{n} {c}" for n, c in codes.items()) + ")")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "up",
        help="run the whole graph (encoder, llm, router) as child processes until Ctrl-C",
        description="Start encoder, llm and router on loopback, stream their logs, stop all three on Ctrl-C. "
        "The encoder and llm also listen on gRPC port - 1 (HTTP) and gRPC port + 1 (metrics).",
    )
    p.add_argument("--encoder-port", type=int, default=8101, help="encoder gRPC port (HTTP -1, metrics +1)")
    p.add_argument("--llm-port", type=int, default=8201, help="llm gRPC port (HTTP -1, metrics +1)")
    p.add_argument("--router-port", type=int, default=8301, help="router gRPC port")
    p.add_argument(
        "--llm-model",
        help=f"hub id, local directory, or 'tiny' (default {DEFAULT_LLM_MODEL} when it loads offline, "
        "else a tiny random-weight model)",
    )
    p.add_argument("--encoder-model", help="sentence-transformers id or path (default: the encoder's default)")
    p.add_argument(
        "--store",
        default=os.environ.get("RAGRAPH_STORE", DEFAULT_STORE),
        help=f"store URI for the router (default $RAGRAPH_STORE or {DEFAULT_STORE})",
    )
    p.add_argument("--graph", help="graph YAML for the router (default: the shipped rag graph)")
    p.add_argument("--host", default="127.0.0.1", help="address all three bind to (default 127.0.0.1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="encoder and llm device")
    p.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where the tiny fallback LLM is built")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for all three to be ready")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on shutdown")
    p.set_defaults(func=up)
