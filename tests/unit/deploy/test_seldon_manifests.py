"""deploy/seldon: the SeldonDeployment (Seldon Core 1) holds listing 6.10's graph with ragraph's
images on the V2 protocol, and the Core 2 Model resources cover the MLServer-served models; both
checked against the CRD schemas in crd_schemas.py, and their pod specs against Kubernetes'."""

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
        "seldondeployment.yaml", "core-v2/models.yaml", "core-v2/server.yaml"}  # fmt: skip
    for path in files:
        for doc in _load(path):
            assert crd_errors(doc) == [], f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"


def test_schema_catches_a_broken_graph(sdep: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(sdep))
    broken["spec"]["predictors"][0]["graph"]["children"][0]["type"] = "AGGREGATOR"
    del broken["spec"]["predictors"][0]["graph"]["children"][0]["children"][0]["name"]
    errors = crd_errors(broken)
    assert any("AGGREGATOR" in e for e in errors) and any("'name' is a required property" in e for e in errors)


def test_graph_is_listing_6_10_on_the_v2_protocol(sdep: dict[str, Any]) -> None:
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


def test_core_v2_models_cover_the_mlserver_models_and_fit_the_server() -> None:
    models = {m["metadata"]["name"]: m for m in _load(SELDON / "core-v2" / "models.yaml")}
    (server,) = _load(SELDON / "core-v2" / "server.yaml")
    settings = {
        json.loads(p.read_text())["name"]: json.loads(p.read_text())
        for p in (REPO / "services").glob("*/*/model-settings.json")
    }
    assert set(models) == set(settings) == {"encoder", "classifier", "llm"}
    capabilities = set(server["spec"].get("extraCapabilities", [])) | set(server["spec"].get("capabilities", []))
    for name, model in models.items():
        assert set(model["spec"]["requirements"]) <= capabilities, name
        assert model["spec"]["storageUri"].rstrip("/").endswith(f"/{name}")
    assert server["spec"]["serverConfig"] == "mlserver"
    (container,) = server["spec"]["podSpec"]["containers"]
    assert container["name"] == "mlserver" and container["image"].startswith("ragraph/")
    assert unknown_env("llm", [e["name"] for e in container.get("env", [])]) == []
    # the agent loads models through MLServer's repository API, off by default in ragraph's runtimes
    assert {"name": "RAGRAPH_LLM_MODEL_REPOSITORY_API", "value": "true"} in container["env"]
