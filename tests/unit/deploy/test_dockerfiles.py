"""The three Dockerfiles (and .dockerignore) against the image rules of issue 6: pinned bases,
non-root, nothing built or cached in the final stage, a grpc.health.v1 HEALTHCHECK, the ports
and entry point the service settings define, and one shared install script."""

from __future__ import annotations

import fnmatch
import re
import shlex

import pytest
from deploy_checks import (
    REPO,
    SERVICES,
    dockerfile_problems,
    load_dockerfile,
    parse_dockerfile,
    settings_defaults,
    unknown_env,
)


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_follows_the_image_rules(service: str) -> None:
    assert dockerfile_problems(load_dockerfile(service), service) == []


GOOD = """
ARG BASE=python:3.11.13-slim-bookworm
FROM ${BASE} AS build
RUN python -m pip install --no-cache-dir x
FROM ${BASE}
COPY --from=build /opt/ragraph /opt/ragraph
USER 10001:10001
HEALTHCHECK CMD ragraph health "127.0.0.1:${RAGRAPH_ENCODER_GRPC_PORT:-8101}"
CMD ["ragraph", "serve", "encoder"]
"""


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("python:3.11.13-slim-bookworm", "python:latest"), "not pinned"),
        (("python:3.11.13-slim-bookworm", "python"), "not pinned"),
        (("USER 10001:10001", "USER root"), "is root"),
        (("USER 10001:10001\n", ""), "no USER"),
        (("USER 10001", "RUN apt-get install -y build-essential\nUSER 10001"), "build tools"),
        (("USER 10001", "RUN pip install torch\nUSER 10001"), "pip install runs in the final stage"),
        (("/opt/ragraph /opt/ragraph", "/root/.cache /root/.cache"), "only the venv"),
        (('HEALTHCHECK CMD ragraph health "127.0.0.1:${RAGRAPH_ENCODER_GRPC_PORT:-8101}"\n', ""), "no HEALTHCHECK"),
        (("ragraph health", "curl -f http://localhost:8100/v2/health/ready ||"), "grpc.health.v1"),
    ],
)
def test_the_rules_catch_what_they_are_for(change: tuple[str, str], problem: str) -> None:
    assert dockerfile_problems(parse_dockerfile(GOOD), "encoder") == []
    bad = GOOD.replace(*change)
    assert bad != GOOD
    problems = dockerfile_problems(parse_dockerfile(bad), "encoder")
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("service", SERVICES)
def test_ports_entry_point_and_bind_address(service: str) -> None:
    df = load_dockerfile(service)
    ports = settings_defaults(service)
    exposed = {int(p) for arg in df.final("EXPOSE") for p in arg.split()}
    assert exposed == set(ports.values())
    assert shlex.split(df.final("CMD")[-1].strip("[]").replace(",", " ")) == ["ragraph", "serve", service]
    env = " ".join(df.final("ENV"))
    # the settings default to 127.0.0.1, unreachable from outside a container
    assert re.search(rf"\bRAGRAPH_{service.upper()}_HOST=0\.0\.0\.0\b", env)
    names = re.findall(r"\b([A-Z][A-Z0-9_]*)=", env)
    assert unknown_env(service, names) == []
    assert df.final("USER")[-1] == "10001:10001"  # the uid the Kubernetes manifests run as


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_runs_the_shared_install_script_with_cpu_torch(service: str) -> None:
    df = load_dockerfile(service)
    build = df.stage("build")
    assert build is not None
    runs = [arg for kind, arg in build.instructions if kind == "RUN"]
    assert any("ragraph-install /opt/ragraph /src" in r for r in runs), runs
    args = dict(arg.partition("=")[::2] for kind, arg in build.instructions if kind == "ARG")
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    pinned = re.search(r"torch==([0-9.]+)", (REPO / "Makefile").read_text())
    assert pinned and args["TORCH_VERSION"] == pinned.group(1)  # the torch the project is tested with
    assert "BASE_IMAGE" in df.global_args  # a CUDA (or other) base is one build arg away


def test_install_script_builds_without_compilers_and_without_a_pip_cache() -> None:
    script = (REPO / "deploy" / "docker" / "install.sh").read_text()
    assert "PIP_NO_CACHE_DIR=1" in script
    assert "--only-binary=:all:" in script  # no sdist is compiled, so no image needs gcc
    assert re.search(r"--index-url \"\$TORCH_INDEX_URL\" \"torch==\$TORCH_VERSION\"", script)
    assert script.index("torch==$TORCH_VERSION") < script.index("ragraph-*.whl")  # torch first


def test_llm_baked_target_is_optional_and_the_default_holds_no_weights() -> None:
    df = load_dockerfile("llm")
    assert df.stages[-1].base == "runtime" and not df.stages[-1].instructions
    baked = df.stage("baked")
    assert baked is not None and baked.base == "runtime"
    env = " ".join(arg for kind, arg in baked.instructions if kind == "ENV")
    assert "RAGRAPH_LLM_MODEL=/models/llm" in env and "HF_HUB_OFFLINE=1" in env
    default_copies = " ".join(df.final("COPY"))
    assert "/models/llm" not in default_copies


def _dockerignore_included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*.*", ".*")
        if pattern.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(pattern[3:])
        if any(re.fullmatch(regex, c) for c in candidates):
            included = negate
    return included


def test_dockerignore_sends_what_the_dockerfiles_copy_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for service in SERVICES:
        df = load_dockerfile(service)
        for stage in df.stages:
            for kind, arg in stage.instructions:
                if kind == "COPY" and "--from=" not in arg:
                    for src in shlex.split(arg)[:-1]:
                        assert _dockerignore_included(src.rstrip("/"), patterns), (service, src)
    for path in ["clients/ragraph_cli/main.py", "services/router/ragraph_router/graphs/rag.yaml", "README.md"]:
        assert _dockerignore_included(path, patterns), path
    for path in [".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".ragraph/store/x", "bench/graph.py",
                 "services/encoder/ragraph_encoder/__pycache__/model.cpython-311.pyc", "ragraph.egg-info/PKG-INFO",
                 "deploy/compose/models/tiny-llm/model.safetensors"]:  # fmt: skip
        assert not _dockerignore_included(path, patterns), path
