"""deploy/seldon: the SeldonDeployment (Seldon Core 1) holds the encoder -> combiner -> llm +
classifier graph with ragraph's images on the V2 protocol; the Core 2 Models cover the
MLServer-served models and land on the Server whose image serves them, and the Servers run
ragraph under Seldon's agent (merged over the published mlserver ServerConfig). The Core 1
resource is checked against a hand-written schema, the Core 2 ones against Seldon's published
CRDs (crd_schemas.py), pod specs against Kubernetes'."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schemas import crd_errors
from deploy_checks import DEPLOY, REPO, settings_defaults, unknown_env

SELDON = DEPLOY / "seldon"
SERVICE_OF = {"encoder": "encoder", "classifier": "encoder", "llm": "llm", "combiner": "router"}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def sdep() -> dict[str, Any]:
    (doc,) = _load(SELDON / "seldondeployment.yaml")
    return doc


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [n for child in node.get("children", []) for n in _nodes(child)]


def test_every_seldon_resource_has_its_required_fields() -> None:
    files = sorted(SELDON.rglob("*.yaml"))
    assert {f.relative_to(SELDON).as_posix() for f in files} == {
        "seldondeployment.yaml",
        "core-v2/models.yaml",
        "core-v2/server.yaml",
    }
    for path in files:
        for doc in _load(path):
            assert crd_errors(doc) == [], f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"


def test_schema_catches_a_broken_graph(sdep: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(sdep))
    broken["spec"]["predictors"][0]["graph"]["children"][0]["type"] = "AGGREGATOR"
    del broken["spec"]["predictors"][0]["graph"]["children"][0]["children"][0]["name"]
    errors = crd_errors(broken)
    assert any("AGGREGATOR" in e for e in errors) and any("'name' is a required property" in e for e in errors)


def test_graph_is_the_rag_nodes_on_the_v2_protocol(sdep: dict[str, Any]) -> None:
    spec = sdep["spec"]
    assert spec["protocol"] == "v2"
    (predictor,) = spec["predictors"]
    graph = predictor["graph"]
    assert (graph["name"], graph["type"]) == ("encoder", "MODEL")
    (combiner,) = graph["children"]
    assert (combiner["name"], combiner["type"]) == ("combiner", "COMBINER")
    assert {(c["name"], c["type"]) for c in combiner["children"]} == {("llm", "MODEL"), ("classifier", "MODEL")}
    # Seldon calls /v2/models/<node name>/infer: MODEL node names are the V2 model names we serve
    served = {json.loads(p.read_text())["name"] for p in (REPO / "services").glob("*/*/model-settings.json")}
    assert {n["name"] for n in _nodes(graph) if n["type"] == "MODEL"} <= served


def test_each_node_has_a_container_with_ragraph_image_and_consistent_ports(sdep: dict[str, Any]) -> None:
    (predictor,) = sdep["spec"]["predictors"]
    containers = {c["name"]: c for cs in predictor["componentSpecs"] for c in cs["spec"]["containers"]}
    assert set(containers) == {n["name"] for n in _nodes(predictor["graph"])}
    used_ports: set[int] = set()
    for name, container in containers.items():
        service = SERVICE_OF[name]
        assert re.fullmatch(r"ragraph/" + service + r":\d+\.\d+\.\d+", container["image"]), container["image"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env[f"RAGRAPH_{service.upper()}_HOST"] == "0.0.0.0"
        assert unknown_env(service, list(env)) == [], name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # the ports Seldon's operator keeps (named http / grpc) are the ones the service binds
        for kind in ("http", "grpc", "metrics"):
            assert (
                int(env.get(f"RAGRAPH_{service.upper()}_{kind.upper()}_PORT") or settings_defaults(service)[kind])
                == ports[kind]
            )
        assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
        assert not used_ports & set(ports.values()), f"{name} reuses a port"
        used_ports |= set(ports.values())


def test_component_pod_specs_validate_as_kubernetes_pods(sdep: dict[str, Any]) -> None:
    import kubernetes_validate

    for i, component in enumerate(sdep["spec"]["predictors"][0]["componentSpecs"]):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"component-{i}"}, "spec": component["spec"]}
        kubernetes_validate.validate(pod, "1.32.0", strict=True)


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(float(number) * units.get(unit, 1))


def _served_by() -> dict[str, str]:
    """V2 model name -> the service whose image runs it (services/<service>/<model>/model-settings.json)."""
    found = (REPO / "services").glob("*/*/model-settings.json")
    return {json.loads(p.read_text())["name"]: p.parent.parent.name for p in found}


def test_core_v2_models_land_on_the_server_whose_image_serves_them() -> None:
    models = {m["metadata"]["name"]: m for m in _load(SELDON / "core-v2" / "models.yaml")}
    servers = {s["metadata"]["name"]: s for s in _load(SELDON / "core-v2" / "server.yaml")}
    served_by = _served_by()
    assert set(models) == set(served_by) == {"encoder", "classifier", "llm"}
    placed: dict[str, list[str]] = {}
    for name, model in models.items():
        fits = [
            s
            for s, server in servers.items()
            if set(model["spec"]["requirements"])
            <= set(server["spec"].get("extraCapabilities", [])) | set(server["spec"].get("capabilities", []))
        ]
        assert len(fits) == 1, (name, fits)
        (server,) = fits
        placed.setdefault(server, []).append(name)
        assert model["spec"]["storageUri"].rstrip("/").endswith(f"/{name}")
        (container,) = servers[server]["spec"]["podSpec"]["containers"]
        assert re.fullmatch(rf"ragraph/{served_by[name]}:\d+\.\d+\.\d+", container["image"]), (name, container["image"])
    # Seldon's agent fits models by memory into the mlserver container's memory request
    for server, names in placed.items():
        (container,) = servers[server]["spec"]["podSpec"]["containers"]
        request = _memory_bytes(container["resources"]["requests"]["memory"])
        assert sum(_memory_bytes(models[n]["spec"]["memory"]) for n in names) <= request, server


@pytest.mark.parametrize("service", ["encoder", "llm"])
def test_core_v2_server_runs_ragraph_under_seldons_agent(service: str) -> None:
    from deploy_checks import load_dockerfile
    from seldon_pod import container, plain_env, pod_spec

    servers = {s["metadata"]["name"]: s for s in _load(SELDON / "core-v2" / "server.yaml")}
    server = servers[f"ragraph-{service}"]
    assert server["spec"]["serverConfig"] == "mlserver"
    (ours,) = server["spec"]["podSpec"]["containers"]
    assert ours["name"] == "mlserver"  # the ServerConfig container it replaces
    assert unknown_env(service, [e["name"] for e in ours.get("env", [])]) == []
    pod = pod_spec(server)
    mlserver = container(pod)
    env = plain_env(mlserver)
    prefix = f"RAGRAPH_{service.upper()}_"
    # the agent loads models through the repository API (off by default), and sends no token
    assert env[f"{prefix}MODEL_REPOSITORY_API"] == "true"
    assert f"{prefix}SERVICE_TOKEN" not in env
    # parallel workers drop token streaming: 0 overrides the ServerConfig's 1
    assert env["MLSERVER_PARALLEL_WORKERS"] == "0"
    # the image's user, not the ServerConfig's uid 1000; /cache a volume the pod's fsGroup makes writable
    user = load_dockerfile(service).final("USER")[-1]
    uid, _, gid = user.partition(":")
    security = mlserver["securityContext"]
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == (uid, gid or uid)
    assert pod["securityContext"]["fsGroup"]
    mounts = {m["mountPath"]: m["name"] for m in mlserver["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/cache"]] or "persistentVolumeClaim" in volumes[mounts["/cache"]]
    assert env["HF_HOME"].startswith("/cache/")


def test_core_v2_schema_refuses_a_misspelt_field() -> None:
    (server, _) = _load(SELDON / "core-v2" / "server.yaml")
    broken = json.loads(json.dumps(server))
    broken["spec"]["podSpec"]["containers"][0]["volumeMount"] = broken["spec"]["podSpec"]["containers"][0].pop(
        "volumeMounts"
    )
    broken["spec"]["replica"] = 2
    errors = crd_errors(broken)
    assert any("'volumeMount' was unexpected" in e for e in errors), errors
    assert any("'replica' was unexpected" in e for e in errors), errors
    (model, *_) = _load(SELDON / "core-v2" / "models.yaml")
    del model["spec"]["storageUri"]
    assert crd_errors(model) == ["spec: 'storageUri' is a required property"]
