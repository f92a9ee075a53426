"""``make demo``: the whole graph end to end on this machine, offline.

1. choose the LLM (Qwen2.5-0.5B-Instruct when it is in the local HF cache, else the bundled
   SmolLM2-135M-Instruct GGUF; ``ragraph_cli.llm_choice``),
2. ``ragraph up`` as a :class:`ragraph_cli.stack.Stack` (service logs go to .ragraph/demo/stack.log),
3. ``ragraph ingest docs README.md`` into ``local://.ragraph/demo-store`` through the encoder,
4. ``ragraph ask --stream`` one question: the services' default ports,
5. stop all three services (also on error or Ctrl-C).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ragraph_cli.llm_choice import resolve_llm_model, tiny_warning
from ragraph_cli.ports import free_ports, port_free
from ragraph_cli.stack import Stack, StackConfig, StackError

REPO = Path(__file__).resolve().parents[1]
STORE = "local://.ragraph/demo-store"
LOG = Path(".ragraph/demo/stack.log")
# Asked of the bundled 135M model, "Which services make up a ragraph deployment, and on which ports
# do they run?" drew a loop; this wording draws the three services and their ports as a list.
QUESTION = "What are the default ports of the encoder, llm and router services?"
RAGRAPH = [sys.executable, "-m", "ragraph_cli.main"]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ragraph(*args: str) -> None:
    """Run one ``ragraph`` command, echoing it first; CalledProcessError when it fails."""
    print("$ ragraph " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run([*RAGRAPH, *args], check=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    os.chdir(REPO)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    step("choosing the LLM")
    try:
        choice = resolve_llm_model(None, say=print)
    except StackError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    print(tiny_warning(choice, color) if choice.tiny else f"llm: {choice.label} ({choice.reason or choice.model})")

    config = StackConfig(llm_model=choice.model, llm_gguf_file=choice.gguf_file, store=STORE)
    if not all(port_free(p) for p in Stack(config, log=None).ports()):
        config.encoder_port, config.llm_port, config.router_port = free_ports()
        print(f"(the default ports are taken: using {config.encoder_port}, {config.llm_port}, {config.router_port})")
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "w", encoding="utf-8") as log:
        stack = Stack(config, log=log, color=False)
        try:
            step(f"ragraph up (service logs: {LOG})")
            stack.start()
            stack.wait_ready(on_ready=lambda name, s: print(f"{name} ready after {s:.1f}s", flush=True))
            print(stack.banner(choice.label))

            step("ingesting the project's own docs/ and README.md through the encoder")
            ragraph(
                "ingest", "docs", "README.md", "--store", STORE, "--encoder-url", stack.encoder_url, "--no-progress"
            )

            step("asking the graph (streamed)")
            max_tokens = "56"  # the three-line answer fits; random tokens (tiny) need no more either
            ragraph(
                "ask",
                QUESTION,
                "--stream",
                "--router-url",
                stack.router_url,
                "--max-tokens",
                max_tokens,
                "--temperature",
                "0",
            )
        except StackError as exc:
            exc.report("make demo", LOG)
            return 1
        except subprocess.CalledProcessError as exc:
            command = exc.cmd[len(RAGRAPH)]
            print(f"\nmake demo: `ragraph {command}` failed with exit code {exc.returncode}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nmake demo: interrupted", file=sys.stderr)
            return 130
        finally:
            step("stopping the services")
            codes = stack.stop()
            print("stopped: " + ", ".join(f"{name} exit {code}" for name, code in codes.items()))
    print(f"\ndemo done in {time.monotonic() - started:.0f}s. Run it yourself: .venv/bin/ragraph up (see README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
