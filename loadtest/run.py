"""``make loadtest``: the whole graph on loopback under locust, headless, then a short summary.

    python loadtest/run.py [--users 8] [--duration 60s] [--spawn-rate 2] [--out loadtest/out]
                           [--max-tokens N] [--llm-model ID|PATH|tiny] [--corpus DIR]

1. the LLM as ``make demo`` chooses it (the default hub model when it loads offline, else the tiny
   random-weight one),
2. ``ragraph up`` as a :class:`ragraph_cli.stack.Stack` (default ports, or free ones when those are
   taken; service logs in ``OUT/stack.log``) with a temporary ``local://`` store,
3. ``ragraph ingest`` of ``bench/retrieval/corpus`` (the questions the users ask are about it),
4. ``locust -f loadtest/locustfile.py --headless`` for a fixed user count and duration, CSV to
   ``OUT/locust_*.csv``,
5. the summary table (loadtest/summary.py), also ``OUT/summary.json``; the stack is stopped.

With ``RAGRAPH_LOADTEST_URL`` set, steps 1-3 are skipped and locust runs against that router.
Exit code 1 when a request failed with anything but RESOURCE_EXHAUSTED (or none completed).
The CPU seconds each service and locust used during the run go into the summary (``cpu_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtest.summary import exit_code, parse_duration, summarize, table  # noqa: E402

RAGRAPH = [sys.executable, "-m", "ragraph_cli.main"]
CORPUS = REPO / "bench" / "retrieval" / "corpus"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _session_cpu_s(sid: int) -> float:
    """User + system CPU seconds of the live processes in session ``sid`` (a stack child's own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # fields after "pid (comm)": state ppid pgrp session ...
            total += (int(fields[11]) + int(fields[12])) / tick  # utime stime
    return total


def _stack_cpu(stack: Any) -> dict[str, float]:
    if not sys.platform.startswith("linux") or stack is None:
        return {}
    return {
        name: _session_cpu_s(child.process.pid)
        for name, child in stack.children.items()
        if child.process is not None and child.process.poll() is None
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_locust(args: argparse.Namespace, url: str, prefix: Path, extra: dict[str, Any]) -> int:
    """Locust headless as a child process (gevent stays out of this one); the 1-minute load average
    before and after goes into ``extra`` (other jobs on the machine skew every figure)."""
    env = {**os.environ, "RAGRAPH_LOADTEST_URL": url}
    if args.max_tokens is not None:
        env["RAGRAPH_LOADTEST_MAX_TOKENS"] = str(args.max_tokens)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtest" / "locustfile.py"),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        args.duration,
        "--stop-timeout",
        str(args.stop_timeout),
        "--csv",
        str(prefix),
        "--only-summary",
    ]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    extra["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    rc = subprocess.run(cmd, env=env, cwd=REPO).returncode
    extra["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return rc


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", default="60s", help="locust run time: 60s, 2m, 1m30s")
    parser.add_argument("--spawn-rate", type=float, default=2.0, help="users started per second")
    parser.add_argument("--stop-timeout", type=int, default=60, help="seconds users get to finish their stream")
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "out")
    parser.add_argument("--max-tokens", type=int, help="tokens per answer (default $RAGRAPH_LOADTEST_MAX_TOKENS or 48)")
    parser.add_argument("--llm-model", help="hub id, local directory or 'tiny' (default: as make demo chooses)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="documents ingested before the run")
    args = parser.parse_args(argv)
    parse_duration(args.duration)  # fail before starting anything

    os.chdir(REPO)
    signal.signal(signal.SIGTERM, _interrupt)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / "locust"
    for old in [*args.out.glob("locust_*.csv"), args.out / "summary.json"]:
        old.unlink(missing_ok=True)

    external = os.environ.get("RAGRAPH_LOADTEST_URL", "").strip()
    extra: dict[str, Any] = {"spawn_rate": args.spawn_rate, "machine": machine()}
    if args.max_tokens is not None or os.environ.get("RAGRAPH_LOADTEST_MAX_TOKENS"):
        extra["max_tokens"] = args.max_tokens or int(os.environ["RAGRAPH_LOADTEST_MAX_TOKENS"])
    else:
        extra["max_tokens"] = 48
    if external:
        step(f"load test against the running router at {external}")
        extra.update(router=external, llm="(external)")
        locust_cpu = _children_cpu_s()
        started = time.monotonic()
        rc = run_locust(args, external, prefix, extra)
        extra.update(wall_s=round(time.monotonic() - started, 1), cpu_s={"locust": _children_cpu_s() - locust_cpu})
        return finish(args, prefix, rc, extra)

    from ragraph_cli.llm_choice import resolve_llm_model, tiny_warning
    from ragraph_cli.ports import free_ports, port_free
    from ragraph_cli.stack import Stack, StackConfig, StackError

    step("choosing the LLM")
    choice = resolve_llm_model(args.llm_model, say=print)
    print(tiny_warning(choice) if choice.tiny else f"llm: {choice.model}")
    extra["llm"] = f"{choice.model} (tiny random weights)" if choice.tiny else choice.model

    with tempfile.TemporaryDirectory(prefix="ragraph-loadtest-") as tmp:
        store = f"local://{tmp}/store"
        config = StackConfig(llm_model=choice.model, store=store)
        if not all(port_free(p) for p in Stack(config, log=None).ports()):
            config.encoder_port, config.llm_port, config.router_port = free_ports()
            ports = f"{config.encoder_port}, {config.llm_port}, {config.router_port}"
            print(f"(the default ports are taken: using {ports})")
        log_path = args.out / "stack.log"
        with open(log_path, "w", encoding="utf-8") as log:
            stack = Stack(config, log=log, color=False)
            try:
                step(f"ragraph up (service logs: {log_path})")
                stack.start()
                stack.wait_ready(on_ready=lambda name, s: print(f"{name} ready after {s:.1f}s", flush=True))
                extra["router"] = stack.router_url

                step(f"ingesting {args.corpus} into {store}")
                cmd = [
                    *RAGRAPH,
                    "ingest",
                    str(args.corpus),
                    "--store",
                    store,
                    "--encoder-url",
                    stack.encoder_url,
                    "--no-progress",
                ]
                subprocess.run(cmd, check=True)

                step(f"locust: {args.users} users for {args.duration} against {stack.router_url}")
                stack_cpu, locust_cpu = _stack_cpu(stack), _children_cpu_s()
                started = time.monotonic()
                rc = run_locust(args, stack.router_url, prefix, extra)
                wall = time.monotonic() - started
                after = _stack_cpu(stack)
                cpu = {name: round(after[name] - stack_cpu.get(name, 0.0), 1) for name in after}
                cpu["locust"] = round(_children_cpu_s() - locust_cpu, 1)
                extra.update(wall_s=round(wall, 1), cpu_s=cpu)
                dead = stack.dead()
                if dead is not None:
                    print(f"\nmake loadtest: {dead.name} exited during the run (see {log_path})", file=sys.stderr)
                    extra["died"] = dead.name
            except StackError as exc:
                exc.report("make loadtest", log_path)
                return 1
            except subprocess.CalledProcessError as exc:
                print(f"\nmake loadtest: `{shlex.join(map(str, exc.cmd))}` failed ({exc.returncode})", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\nmake loadtest: interrupted", file=sys.stderr)
                return 130
            finally:
                step("stopping the services")
                codes = stack.stop()
                print("stopped: " + ", ".join(f"{name} exit {code}" for name, code in codes.items()))
    code = finish(args, prefix, rc, extra)
    return 1 if extra.get("died") else code


def finish(args: argparse.Namespace, prefix: Path, locust_rc: int, extra: dict[str, Any]) -> int:
    """Summary table and summary.json; locust's own exit code 1 only means "some request failed",
    which the summary judges (RESOURCE_EXHAUSTED is fine), anything else is a broken run."""
    stats = Path(f"{prefix}_stats.csv")
    if not stats.is_file():
        print(f"\nmake loadtest: locust wrote no {stats} (exit code {locust_rc})", file=sys.stderr)
        return 1
    summary = summarize(prefix, args.users, args.duration, locust_exit_code=locust_rc, **extra)
    path = args.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    step(f"summary ({path}, locust CSV: {prefix}_*.csv)")
    print(table(summary))
    if summary.get("cpu_s") and summary.get("wall_s"):
        busy = ", ".join(f"{n} {s / summary['wall_s']:.2f}" for n, s in summary["cpu_s"].items())
        print(f"CPU cores used during the run: {busy} (of {summary['machine']['cpus']})")
    code = exit_code(summary)
    if locust_rc not in (0, 1):
        print(f"make loadtest: locust exited with code {locust_rc}", file=sys.stderr)
        code = 1
    if code:
        print("make loadtest: FAILED (errors other than RESOURCE_EXHAUSTED, or no request completed)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
