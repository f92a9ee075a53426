"""``make compose-check``: the images built and the compose graph run end to end in containers.

Needs a Docker engine, docker compose (v2 plugin) or docker-compose (1.29), and curl; nothing from
this repository's .venv. Steps, each echoed with the command it runs:

1. build the three images (``compose build``: the engine's default builder; ``DOCKER_BUILDKIT=0``
   forces the classic one), and print their sizes;
2. ``compose up -d`` the default profile under a project of its own (``ragraph-check``, so an
   existing ``ragraph`` deployment is untouched), with a service token generated for the run;
3. wait until encoder, llm and router are healthy;
4. check the images' promises inside the running containers: a writable home, no torch in the
   router, and the router's start-up log free of downloads;
5. ingest this repository's docs/ and README.md (``ragraph ingest`` in a one-off router container
   on the store volume);
6. ask streamed over gRPC (``ragraph ask --stream`` in the router container) and over SSE (curl
   on the published REST port);
7. kill the llm container (SIGKILL): a question then fails with UNAVAILABLE, the restart policy
   brings the llm back, the router turns healthy again and the same question is answered;
8. ``compose down -v``: no container, network or volume of the run is left (checked against the
   engine's volume list from before the run).

The stack is taken down on any failure too (``--keep`` leaves it up). Build arguments come from
the environment as compose passes them (``TORCH_INDEX_URL``, ``TIKTOKEN_ENCODING``). Exit 0 when
every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODES = ("encoder", "llm", "router")
QUESTION = "What are the default ports of the encoder, llm and router services?"
STARTED = time.monotonic()


class CheckFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"\n==> {text}  [{time.monotonic() - STARTED:.0f}s]", flush=True)


def run(
    cmd: list[str], *, check: bool = True, quiet: bool = False, tail: int = 25, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, echoing it and (up to ``tail`` lines of) its output."""
    print("$ " + shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    out = (done.stdout + done.stderr).rstrip("\n")
    lines = out.splitlines()
    if not quiet and lines:
        if len(lines) > tail:
            print(f"  ... ({len(lines) - tail} lines before)")
        print("\n".join(lines[-tail:]), flush=True)
    if check and done.returncode != 0:
        if quiet:
            print("\n".join(lines[-tail:]))
        raise CheckFailed(f"exit {done.returncode}: {shlex.join(cmd)}")
    return done


class Compose:
    def __init__(self, base: list[str], project: str) -> None:
        self.base = [*base, "-f", str(REPO / "compose.yaml"), "-p", project]
        self.project = project

    def __call__(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return run([*self.base, *args], **kw)  # type: ignore[arg-type]

    def container(self, service: str) -> str:
        ids = self("ps", "-q", service, quiet=True).stdout.split()
        if not ids:
            raise CheckFailed(f"no container for service {service}")
        return ids[0]


def compose_command() -> list[str]:
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise CheckFailed("neither `docker compose` nor `docker-compose` is available")


def inspect(container: str, template: str) -> str:
    done = subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True)
    return done.stdout.strip()


def wait_healthy(compose: Compose, services: tuple[str, ...], timeout: float) -> None:
    since = time.monotonic()
    deadline = since + timeout
    ids = {s: compose.container(s) for s in services}
    pending = set(services)
    while pending:
        for service in sorted(pending):
            status = inspect(ids[service], "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
            if status.endswith("healthy") and not status.endswith("unhealthy"):
                print(f"  {service} healthy {time.monotonic() - since:.0f}s after the wait began", flush=True)
                pending.discard(service)
        if pending and time.monotonic() > deadline:
            for service in pending:
                run(["docker", "logs", "--tail", "30", ids[service]], check=False)
            raise CheckFailed(f"not healthy within {timeout:.0f}s: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(3)


def crash(container: str, image: str) -> None:
    """SIGKILL to the container's main process from the engine's host PID namespace. Not `docker
    kill`: the engine counts that as a manual stop, which `restart: unless-stopped` honours."""
    pid = int(inspect(container, "{{.State.Pid}}") or 0)
    if pid <= 0:
        raise CheckFailed(f"container {container} has no running process")
    run(
        [
            "docker",
            "run",
            "--rm",
            "--pid",
            "host",
            "--user",
            "0",
            "--network",
            "none",
            "--entrypoint",
            "python",
            image,
            "-c",
            f"import os; os.kill({pid}, 9)",
        ]
    )


def volumes() -> set[str]:
    return set(subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split())


FAILED: list[str] = []


def expect(condition: bool, message: str) -> None:
    """A check of what a step produced: reported, and the run goes on (the exit code says)."""
    FAILED.extend([] if condition else [message])
    print(f"  {'ok' if condition else 'FAILED'}: {message}", flush=True)


def check_containers(compose: Compose) -> None:
    for service in NODES:
        done = compose(
            "exec",
            "-T",
            service,
            "python",
            "-c",
            "import pathlib; p = pathlib.Path.home() / '.probe'; p.write_text('x'); p.unlink(); print(p.parent)",
        )
        expect(done.stdout.strip() == "/home/ragraph", f"{service}: the home directory /home/ragraph is writable")
    done = compose(
        "exec",
        "-T",
        "router",
        "python",
        "-c",
        "import importlib.util as u; print([m for m in ('torch', 'transformers', 'mlserver') if u.find_spec(m)])",
    )
    expect(done.stdout.strip() == "[]", "router image: no torch, transformers or mlserver installed")
    logs = compose("logs", "--no-color", "router", quiet=True).stdout
    hosts = ("openaipublic.blob.core.windows.net", "huggingface.co")
    # a line may name a URL it did not fetch (the tiktoken fallback's warning says "no download")
    fetched = [ln for ln in logs.splitlines() if any(h in ln for h in hosts) and "no download" not in ln]
    expect(not fetched, "router log: nothing fetched at start (tiktoken, Hugging Face)")
    for line in logs.splitlines():
        if "tiktoken" in line:
            print("  " + line.strip()[:200])


def ask_grpc(compose: Compose, check: bool = True) -> subprocess.CompletedProcess[str]:
    return compose(
        "exec",
        "-T",
        "router",
        "ragraph",
        "ask",
        QUESTION,
        "--stream",
        "--router-url",
        "127.0.0.1:8301",
        "--max-tokens",
        "48",
        "--temperature",
        "0",
        "--timeout",
        "180",
        check=check,
    )


def ask_sse(port: int) -> None:
    body = json.dumps({"text_input": QUESTION, "parameters": {"max_tokens": 32, "temperature": 0}})
    done = run(
        [
            "curl",
            "-sN",
            "--max-time",
            "180",
            f"http://127.0.0.1:{port}/v2/models/rag/generate_stream",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ],
        tail=8,
    )
    events = [json.loads(line[5:]) for line in done.stdout.splitlines() if line.startswith("data:")]
    text = "".join(str(e.get("answer", "")) for e in events)
    expect(len(events) >= 3 and text.strip() != "", f"SSE: {len(events)} events, {len(text)} characters of answer")
    expect("event: error" not in done.stdout, "SSE: no error event")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="ragraph-check", help="compose project name (default ragraph-check)")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end (no down)")
    parser.add_argument("--healthy-timeout", type=float, default=900, help="seconds to wait for healthy")
    args = parser.parse_args()

    os.environ.setdefault("RAGRAPH_SERVICE_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every default model is inside the images
    compose = Compose(compose_command(), args.project)
    before = volumes()
    up = False
    try:
        if not args.no_build:
            step("building the images")
            built = time.monotonic()
            compose("build", tail=6, timeout=5400)
            print(f"  built in {time.monotonic() - built:.0f}s", flush=True)
        for service in NODES:
            image = f"ragraph/{service}:{os.environ.get('RAGRAPH_VERSION', '0.1.0')}"
            size = int(inspect(image, "{{.Size}}") or 0)
            print(f"  {image}: {size / 1e9:.2f} GB", flush=True)

        step(f"compose up (project {args.project}, a service token generated for this run)")
        up = True
        compose("up", "-d", tail=10)
        wait_healthy(compose, NODES, args.healthy_timeout)

        step("inside the containers")
        check_containers(compose)

        step("ingesting docs/ and README.md into the router's store volume")
        docs, readme = f"{REPO / 'docs'}:/corpus/docs:ro", f"{REPO / 'README.md'}:/corpus/README.md:ro"
        compose(
            "run",
            "--rm",
            "-T",
            "-v",
            docs,
            "-v",
            readme,
            "router",
            "ragraph",
            "ingest",
            "/corpus/docs",
            "/corpus/README.md",
            "--store",
            "local:///data/store",
            "--encoder-url",
            "encoder:8101",
            "--no-progress",
            tail=4,
        )

        step("asking over gRPC, streamed")
        done = ask_grpc(compose)
        expect("sources:" in done.stdout and "[1]" in done.stdout, "gRPC: an answer with sources")

        step("asking over REST, server-sent events")
        ask_sse(8300)

        step("the llm crashes: its process killed (SIGKILL, as the OOM killer would)")
        llm = compose.container("llm")
        restarts = int(inspect(llm, "{{.RestartCount}}") or 0)
        crash(llm, f"ragraph/router:{os.environ.get('RAGRAPH_VERSION', '0.1.0')}")
        failed = ask_grpc(compose, check=False)
        expect(
            failed.returncode != 0 and "UNAVAILABLE" in failed.stdout + failed.stderr,
            "an ask while the llm is down fails with UNAVAILABLE",
        )
        deadline = time.monotonic() + 120
        while int(inspect(llm, "{{.RestartCount}}") or 0) == restarts:
            if time.monotonic() > deadline:
                raise CheckFailed("the llm was not restarted within 120s (restart policy)")
            time.sleep(1)
        expect(True, f"the restart policy restarted the llm (restart count {restarts + 1})")
        wait_healthy(compose, ("llm", "router"), args.healthy_timeout)
        done = ask_grpc(compose)
        expect("sources:" in done.stdout, "after the llm's recovery: answered again")
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"\ncompose-check: FAILED: {exc}", flush=True)
        if up:
            compose("logs", "--no-color", "--tail", "40", check=False, tail=120)
        return 1
    finally:
        if up and not args.keep:
            step("compose down -v")
            compose("down", "-v", "--remove-orphans", check=False, tail=12)
    if not args.keep:
        left = volumes() - before
        expect(not left, f"no volume left behind {sorted(left) if left else ''}".strip())
    if FAILED:
        print(f"\ncompose-check: FAILED ({len(FAILED)}): " + "; ".join(FAILED))
        return 1
    print(f"\ncompose-check: OK in {time.monotonic() - STARTED:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
