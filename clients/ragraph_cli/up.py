"""``ragraph up``: start the whole graph (:class:`~ragraph_cli.stack.Stack`), stream its logs,
stop it on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .llm_choice import DEFAULT_LLM_MODEL, DEFAULT_MODELS_DIR, resolve_llm_model, tiny_warning
from .stack import DEFAULT_STORE, Stack, StackConfig, StackError


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        choice = resolve_llm_model(args.llm_model, Path(args.models_dir), say, args.llm_gguf_file)
    except StackError as exc:
        print(f"ragraph up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if choice.tiny:
        say(tiny_warning(choice, color))
    elif choice.reason:
        say(f"ragraph up: llm model {choice.label}: {choice.reason}")
    config = StackConfig(
        host=args.host,
        encoder_port=args.encoder_port,
        llm_port=args.llm_port,
        router_port=args.router_port,
        llm_model=choice.model,
        llm_gguf_file=choice.gguf_file,
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
        stack.say(f"ragraph up: starting encoder, llm and router (llm model: {choice.label}) ...")
        ready = stack.wait_ready(
            args.ready_timeout, stop, on_ready=lambda name, s: stack.say(f"ragraph up: {name} ready after {s:.1f}s")
        )
        if ready:
            stack.say(stack.banner(choice.label))
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
        help=f"hub id, save_pretrained directory, .gguf file, or 'tiny' (random weights, for tests); default "
        f"{DEFAULT_LLM_MODEL} when it is in the local HF cache, else the bundled SmolLM2-135M-Instruct GGUF",
    )
    p.add_argument(
        "--llm-gguf-file",
        default=os.environ.get("RAGRAPH_LLM_GGUF_FILE") or None,
        help="a GGUF file inside the --llm-model directory or hub repository (default $RAGRAPH_LLM_GGUF_FILE)",
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
    p.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where --llm-model tiny is built")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for all three to be ready")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on shutdown")
    p.set_defaults(func=up)
