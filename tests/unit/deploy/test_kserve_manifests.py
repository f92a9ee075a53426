"""deploy/kserve: ServingRuntimes for the ragraph images and InferenceServices for the encoder and
the llm, checked against KServe's published CRDs (crd_schemas.py: unknown fields refused), their
containers against Kubernetes' Pod schema, and the kustomization that swaps deploy/k8s's own
encoder and llm for them while keeping the router, policies and monitoring."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from crd_schemas import crd_errors, crd_source
from deploy_checks import DEPLOY, by_kind, kubectl, render, settings_defaults, unknown_env

KSERVE = DEPLOY / "kserve"
NODES = ("encoder", "llm")


def _load(name: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d}


def test_every_resource_validates_against_kserves_crds() -> None:
    runtimes, services = _load("servingruntimes.yaml"), _load("inferenceservices.yaml")
    assert set(runtimes) == {"ragraph-encoder", "ragraph-llm"} and set(services) == set(NODES)
    for obj in [*runtimes.values(), *services.values()]:
        assert crd_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    assert crd_source("serving.kserve.io/v1beta1", "InferenceService").startswith("kserve/kserve ")


def test_the_crd_schema_refuses_misspelt_and_missing_fields() -> None:
    isvc = copy.deepcopy(_load("inferenceservices.yaml")["llm"])
    isvc["spec"]["predictor"]["model"]["runtme"] = isvc["spec"]["predictor"]["model"].pop("runtime")
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    errors = crd_errors(isvc)
    assert any("'runtme' was unexpected" in e for e in errors), errors
    assert any(e.startswith("spec/predictor/minReplicas: 'one' is not of type 'integer'") for e in errors), errors
    runtime = copy.deepcopy(_load("servingruntimes.yaml")["ragraph-llm"])
    del runtime["spec"]["containers"]
    assert crd_errors(runtime) == ["spec: 'containers' is a required property"]


@pytest.mark.parametrize("node", NODES)
def test_each_inference_service_runs_its_node_on_its_runtime(node: str) -> None:
    import kubernetes_validate

    isvc = _load("inferenceservices.yaml")[node]
    runtime = _load("servingruntimes.yaml")[f"ragraph-{node}"]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    assert "storageUri" not in model  # the model comes with the image / cache, loaded at start
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert re.fullmatch(rf"ragraph/{node}:\d+\.\d+\.\d+", container["image"]), container["image"]
    assert container["args"] == ["ragraph", "serve", node]
    env = [e["name"] for e in container["env"]] + [e["name"] for e in model.get("env", [])]
    assert unknown_env(node, env) == []
    token = next(e for e in model["env"] if e["name"] == f"RAGRAPH_{node.upper()}_SERVICE_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "ragraph-secrets", "key": "node-token"}
    # the predictor Service exposes the first port on 80: it must be gRPC, the port the node binds
    ports = container["ports"]
    assert ports[0]["name"] in ("h2c", "grpc") and ports[0]["containerPort"] == settings_defaults(node)["grpc"]
    assert {p["name"]: p["containerPort"] for p in ports[1:]} == {
        k: v for k, v in settings_defaults(node).items() if k != "grpc"
    }
    assert container["readinessProbe"]["grpc"]["port"] == ports[0]["containerPort"]
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    # the container and volumes, as the pod KServe makes of them
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": node},
        "spec": {
            "containers": [container],
            "volumes": runtime["spec"]["volumes"],
            "securityContext": predictor["securityContext"],
        },
    }
    kubernetes_validate.validate(pod, "1.32.0", strict=True)
    assert predictor["labels"]["app.kubernetes.io/name"] == node  # what the NetworkPolicies select


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: `kubectl kustomize` renders")
def test_the_kustomization_swaps_the_nodes_for_the_inference_services() -> None:
    objects = render(str(KSERVE))
    deployments = by_kind(objects, "Deployment")
    assert "encoder" not in deployments and "llm" not in deployments and "router" in deployments
    assert not {"encoder", "llm"} & set(by_kind(objects, "Service"))
    assert not by_kind(objects, "ScaledObject") and set(by_kind(objects, "HorizontalPodAutoscaler")) == {"router"}
    env = next(o for n, o in by_kind(objects, "ConfigMap").items() if n.startswith("ragraph-env"))["data"]
    assert env["RAGRAPH_ENCODER_URL"] == "encoder-predictor:80" and env["RAGRAPH_LLM_URL"] == "llm-predictor:80"
    services = by_kind(objects, "InferenceService")
    policies = by_kind(objects, "NetworkPolicy")
    for node in NODES:
        labels = services[node]["spec"]["predictor"]["labels"]
        selector = policies[f"{node}-ingress"]["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert services[node]["metadata"]["namespace"] == "ragraph"
    for obj in objects:
        if obj["kind"] in ("ServingRuntime", "InferenceService"):
            assert crd_errors(obj) == []
