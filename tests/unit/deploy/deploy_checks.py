"""Shared helpers of the deploy tests: where things are, which environment variables the services
read, a Dockerfile parser, and rendering the kustomize overlays."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SHIPPED_GRAPH = REPO / "services" / "router" / "ragraph_router" / "graphs" / "rag.yaml"
SERVICES = ("encoder", "llm", "router")

# Variables that are not ragraph settings but that a service's libraries read, each with why we set it.
THIRD_PARTY_ENV: dict[str, str] = {
    "HF_HOME": "huggingface_hub/transformers: where downloaded models are cached (a volume)",
    "HF_HUB_OFFLINE": "huggingface_hub: never touch the network (weights baked or already cached)",
    "HF_TOKEN": "huggingface_hub: token for gated or private models",
    "PINECONE_API_KEY": "ragraph_retrieval.pinecone_store and the pinecone SDK: the API key",
    "PGPASSWORD": "libpq (ragraph_retrieval.postgres_store): the postgres:// store's password, kept out of the URI",
    "TIKTOKEN_CACHE_DIR": "tiktoken (ragraph_retrieval.tokens): where the prompt-budget encoding is cached",
    "TOKENIZERS_PARALLELISM": "tokenizers: no fork warning / deadlock with the thread pools",
    "OMP_WAIT_POLICY": "OpenMP (torch's CPU threads): PASSIVE where services share cores (docs/operations.md)",
    "PYTHONUNBUFFERED": "CPython: logs reach the container runtime at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc writes on a read-only root filesystem",
    "PATH": "the image's venv first",
}
# OpenTelemetry's standard variables (ragraph_router.telemetry), any OTEL_* name
THIRD_PARTY_PREFIXES: dict[str, str] = {
    "OTEL_": "OpenTelemetry SDK configuration (router tracing)",
    "MLSERVER_": "MLServer's settings, which ragraph serve encoder|llm reads when launched as MLServer's image is "
    "(ragraph_serving.mlserver_env: Seldon Core 2)",
}


def settings_env(service: str) -> set[str]:
    """Environment variable names the service's settings class reads."""
    if service == "encoder":
        from ragraph_encoder.settings import EncoderSettings as cls
    elif service == "llm":
        from ragraph_llm.settings import LLMSettings as cls  # type: ignore[assignment]
    elif service == "router":
        from ragraph_router.settings import RouterSettings as cls  # type: ignore[assignment]
    else:
        raise ValueError(service)
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def settings_defaults(service: str) -> dict[str, int]:
    """The default gRPC, HTTP and metrics ports of a service."""
    if service == "encoder":
        from ragraph_encoder.settings import EncoderSettings as cls
    elif service == "llm":
        from ragraph_llm.settings import LLMSettings as cls  # type: ignore[assignment]
    else:
        from ragraph_router.settings import RouterSettings as cls  # type: ignore[assignment]
    fields = cls.model_fields
    return {kind: int(fields[f"{kind}_port"].default) for kind in ("grpc", "http", "metrics")}


def graph_env() -> set[str]:
    """The ${VAR} names of the shipped graph (the router expands them at load)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", SHIPPED_GRAPH.read_text()))


def known_env(service: str) -> set[str]:
    known = settings_env(service) | set(THIRD_PARTY_ENV)
    if service == "router":
        known |= graph_env()
    return known


def unknown_env(service: str, names: set[str] | list[str]) -> list[str]:
    known = known_env(service)
    return sorted(n for n in names if n not in known and not any(n.startswith(p) for p in THIRD_PARTY_PREFIXES))


def env_file_names(path: Path) -> list[str]:
    """Variable names an env file sets, including its commented-out examples (`# NAME=`)."""
    names = []
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.append(match.group(1))
    return names


# --- Dockerfiles -------------------------------------------------------------------------------


@dataclass
class Stage:
    index: int
    base: str  # the FROM argument, ARGs resolved
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path | None
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, ref: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == ref:
                return stage
        return None

    def chain(self, stage: Stage | None = None) -> list[Stage]:
        """``stage`` (default: the final one) and the stages it is built FROM, root first."""
        stage = stage or self.stages[-1]
        chain = [stage]
        while (parent := self.stage(chain[0].base)) is not None:
            chain.insert(0, parent)
        return chain

    def final(self, kind: str) -> list[str]:
        """Arguments of every ``kind`` instruction the final image inherits, in order."""
        return [arg for stage in self.chain() for k, arg in stage.instructions if k == kind]


def _resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def parse_dockerfile(text: str, path: Path | None = None) -> Dockerfile:
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    if buffer:
        logical.append(buffer)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = _resolve(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), base, name))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            global_args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        else:
            raise ValueError(f"{keyword} before the first FROM")
    return Dockerfile(path, global_args, stages)


def load_dockerfile(service: str) -> Dockerfile:
    path = REPO / "services" / service / "Dockerfile"
    return parse_dockerfile(path.read_text(), path)


BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cargo|rustc|python3-dev|libc6-dev)\b")


def dockerfile_problems(df: Dockerfile, service: str) -> list[str]:
    """Our image rules, as a list of what a Dockerfile breaks (empty: none)."""
    problems: list[str] = []
    names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        if stage.base in names:
            continue
        image = stage.base
        if "$" in image:
            problems.append(f"stage {stage.index}: FROM {image} does not resolve to a pinned image")
            continue
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        if "@sha256:" in image:
            continue
        if not tag or tag == "latest":
            problems.append(f"stage {stage.index}: FROM {image} is not pinned to a version tag")
    final = df.chain()
    users = df.final("USER")
    user = users[-1].split(":")[0] if users else ""
    if not users:
        problems.append("final stage: no USER (runs as root)")
    elif user in ("root", "0"):
        problems.append(f"final stage: USER {users[-1]} is root")
    for stage in final:
        for kind, arg in stage.instructions:
            if kind == "RUN" and BUILD_TOOLS.search(arg):
                problems.append(f"final stage: RUN installs build tools: {arg[:80]}")
            if kind == "RUN" and re.search(r"\bpip\d*(\.\d+)?\s+install\b|-m\s+pip\s+install", arg):
                problems.append(f"final stage: pip install runs in the final stage: {arg[:80]}")
            if kind == "COPY" and "--from=" in arg:
                src = [w for w in shlex.split(arg) if not w.startswith("--")][0]
                if src not in ("/opt/ragraph", "/models/llm"):
                    problems.append(f"final stage: copies {src} from a build stage (only the venv or weights)")
            if kind in ("RUN", "COPY", "ADD") and ("/root/.cache" in arg or ".cache/pip" in arg):
                problems.append(f"final stage: a pip cache gets into the image: {arg[:80]}")
    checks = df.final("HEALTHCHECK")
    port = settings_defaults(service)["grpc"]
    if not checks:
        problems.append("final stage: no HEALTHCHECK")
    elif not re.search(
        rf"\bragraph health\b.*127\.0\.0\.1:\$\{{RAGRAPH_{service.upper()}_GRPC_PORT:-{port}\}}", checks[-1]
    ):
        problems.append(f"HEALTHCHECK does not run `ragraph health` (grpc.health.v1) on gRPC port {port}: {checks[-1]}")
    return problems


# --- kustomize ---------------------------------------------------------------------------------


def kubectl() -> str | None:
    return shutil.which("kubectl")


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize PATH`` (offline), as a tuple of objects."""
    exe = kubectl()
    assert exe is not None
    out = subprocess.run([exe, "kustomize", path], capture_output=True, text=True, timeout=60, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def by_kind(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
