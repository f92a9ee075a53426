"""deploy/k8s: each overlay rendered with `kubectl kustomize` (offline) validates against the
Kubernetes API schemas (kubernetes-validate) and the CRD schemas in crd_schemas.py, and holds
what issue 6 asks of it: probes on grpc.health.v1, requests and limits, per-service rolling
updates, HPAs and a KEDA ScaledObject, PDBs, NetworkPolicies that leave only the router
reachable from outside the namespace, the graph as a ConfigMap, secrets only by reference, and a
ServiceMonitor that finds every metrics port."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from crd_schemas import crd_errors
from deploy_checks import K8S, SHIPPED_GRAPH, by_kind, kubectl, render, settings_defaults, unknown_env

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: `kubectl kustomize` renders")

OVERLAYS = ["cpu", "gpu"]
K8S_VERSIONS = ["1.29.0", "1.32.0"]  # oldest we claim (native gRPC probes are GA since 1.27) and this kubectl
SERVICES = ("encoder", "llm", "router")
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return render(str(K8S / "overlays" / name))


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(name: str, version: str) -> None:
    import kubernetes_validate

    kinds = set()
    for obj in overlay(name):
        kinds.add(obj["kind"])
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {list(exc.path)}: {exc.message}")
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        *CRD_KINDS,
    }


def test_schema_validation_catches_a_misspelt_field() -> None:
    import kubernetes_validate

    deployment = copy.deepcopy(by_kind(overlay("cpu"), "Deployment")["router"])
    _container(deployment)["readynessProbe"] = _container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", OVERLAYS)
def test_custom_resources_have_their_required_fields(name: str) -> None:
    objects = overlay(name)
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            assert crd_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    scaled = by_kind(objects, "ScaledObject")["llm"]
    broken = copy.deepcopy(scaled)
    del broken["spec"]["triggers"][0]["metadata"]["query"]
    broken["spec"]["maxReplicas"] = 3
    errors = crd_errors(broken)
    assert any("query" in e for e in errors) and any("maxReplicas" in e for e in errors), errors


@pytest.mark.parametrize("name", OVERLAYS)
def test_deployments_probe_grpc_health_and_set_requests_and_limits(name: str) -> None:
    deployments = by_kind(overlay(name), "Deployment")
    assert set(deployments) == set(SERVICES)
    for service, deployment in deployments.items():
        container = _container(deployment)
        grpc_port = settings_defaults(service)["grpc"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == settings_defaults(service)
        # readiness is grpc.health.v1 on the V2 port, natively (no exec, no sidecar)
        assert container["readinessProbe"]["grpc"]["port"] == grpc_port
        assert container["startupProbe"]  # slow starts never meet the liveness probe
        if service == "router":  # its health follows the nodes': restarting it would not help
            assert "grpc" not in container["livenessProbe"]
        else:
            assert container["livenessProbe"]["grpc"]["port"] == grpc_port
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert key in resources["requests"] and key in resources["limits"], (service, key)
        gpus = resources["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) == (name == "gpu" and service == "llm"), (service, gpus)
        env = {e["name"]: e for e in container.get("env", [])}
        assert env[f"RAGRAPH_{service.upper()}_HOST"]["value"] == "0.0.0.0"
        assert container["args"] == ["ragraph", "serve", service]
        assert ":" in container["image"] and not container["image"].endswith(":latest")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False
    llm_env = {e["name"]: e.get("value") for e in _container(deployments["llm"])["env"]}
    assert llm_env["RAGRAPH_LLM_DEVICE"] == ("cuda" if name == "gpu" else "cpu")


@pytest.mark.parametrize("name", OVERLAYS)
def test_rolling_update_strategy_per_service(name: str) -> None:
    deployments = by_kind(overlay(name), "Deployment")
    for service, deployment in deployments.items():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        rolling = strategy["rollingUpdate"]
        # surge first, never below the count: at one replica (the llm's minimum) anything else
        # takes the service away during a rollout
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0), (service, rolling)
    assert deployments["llm"]["spec"]["progressDeadlineSeconds"] >= 1200  # weights download on first start


@pytest.mark.parametrize("name", OVERLAYS)
def test_autoscaling(name: str) -> None:
    objects = overlay(name)
    deployments = by_kind(objects, "Deployment")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    scaled = by_kind(objects, "ScaledObject")
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas.values()}
    assert set(targets) == {"router", "encoder"}  # the llm's HPA belongs to KEDA
    for target, hpa in targets.items():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 2
        # utilization is measured against the request: with request = limit, the target is a share
        # of what the pod may use (a request a quarter of the limit made 70% mean 17.5% busy)
        resources = _container(deployments[target])["resources"]
        assert _cpu(resources["requests"]["cpu"]) == _cpu(resources["limits"]["cpu"]), target
        assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 85, target
    (llm,) = scaled.values()
    assert llm["spec"]["scaleTargetRef"]["name"] == "llm" and llm["spec"]["minReplicaCount"] >= 1
    (trigger,) = llm["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "avg_over_time(ragraph_llm_queue_depth" in query  # time-averaged queue depth
    # an autoscaled Deployment must not pin its replica count (each apply would reset it)
    for service in ("router", "encoder", "llm"):
        assert "replicas" not in deployments[service]["spec"], service


@pytest.mark.parametrize("name", OVERLAYS)
def test_services_and_pdbs_select_the_pods(name: str) -> None:
    objects = overlay(name)
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    for service in SERVICES:
        labels = deployments[service]["spec"]["template"]["metadata"]["labels"]
        selector = services[service]["spec"]["selector"]
        assert selector.items() <= labels.items()
        assert {p["name"]: p["port"] for p in services[service]["spec"]["ports"]} == settings_defaults(service)
        assert pdbs[service]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "maxUnavailable" in pdbs[service]["spec"]  # drains never block on a single replica
    # the nodes: headless, so the router's round_robin channels see every pod, and connections age
    # out so new pods are found
    for service in ("encoder", "llm"):
        assert services[service]["spec"].get("clusterIP") == "None"
        env = {
            e["name"]: e.get("value") for e in deployments[service]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert float(env[f"RAGRAPH_{service.upper()}_MAX_CONNECTION_AGE_S"]) > 0
    assert services["router"]["spec"].get("clusterIP") != "None"


def _cpu(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("name", OVERLAYS)
def test_alerts_cover_errors_ttft_llm_rejections_and_nodes_down(name: str) -> None:
    (rule,) = by_kind(overlay(name), "PrometheusRule").values()
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    exprs = {n: " ".join(r["expr"].split()) for n, r in alerts.items()}
    assert "ragraph_router_requests_total" in exprs["RagraphErrorRate"] and " / " in exprs["RagraphErrorRate"]
    assert "histogram_quantile(0.99" in exprs["RagraphTimeToFirstTokenHigh"]
    assert "ragraph_router_ttft_seconds_bucket" in exprs["RagraphTimeToFirstTokenHigh"]
    assert "ragraph_llm_rejected_requests_total" in exprs["RagraphLLMRejecting"]
    assert "ragraph_llm_queue_depth" in exprs["RagraphLLMQueueNearlyFull"]
    assert exprs["RagraphNodeDown"].startswith("up{") and exprs["RagraphNodeDown"].endswith("== 0")
    for alert, rule_ in alerts.items():
        assert rule_["labels"]["severity"] in ("warning", "critical"), alert
        assert rule_["annotations"]["summary"] and rule_.get("for"), alert
    (monitor,) = by_kind(overlay(name), "ServiceMonitor").values()
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _reachable_from_outside(policies: list[dict[str, Any]], labels: dict[str, str]) -> set[int] | None:
    """Ports of a pod that traffic from outside the namespace may reach (None: every port)."""
    applicable = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not applicable:
        return None
    ports: set[int] = set()
    for policy in applicable:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            outside = not peers or any("namespaceSelector" in p or "ipBlock" in p for p in peers)
            if outside:
                rule_ports = rule.get("ports")
                if not rule_ports:
                    return None
                ports |= {int(p["port"]) for p in rule_ports}
    return ports


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_the_router_is_reachable_from_outside_the_namespace(name: str) -> None:
    objects = overlay(name)
    policies = list(by_kind(objects, "NetworkPolicy").values())
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies), "no default deny"
    deployments = by_kind(objects, "Deployment")
    metrics = {settings_defaults(s)["metrics"] for s in SERVICES}
    for service in SERVICES:
        labels = deployments[service]["spec"]["template"]["metadata"]["labels"]
        outside = _reachable_from_outside(policies, labels)
        assert outside is not None, f"{service}: every port open"
        defaults = settings_defaults(service)
        if service == "router":
            assert {defaults["grpc"], defaults["http"]} <= outside
        else:
            assert outside <= metrics, f"{service} reachable from outside on {outside - metrics}"
            assert defaults["grpc"] not in outside
    # and the router may call both nodes on their gRPC ports
    router_labels = deployments["router"]["spec"]["template"]["metadata"]["labels"]
    for service in ("encoder", "llm"):
        labels = deployments[service]["spec"]["template"]["metadata"]["labels"]
        allowed = {
            int(port["port"])
            for p in policies
            if _selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("ingress") or []
            if any(
                "podSelector" in peer and _selects(peer["podSelector"], router_labels) for peer in rule.get("from", [])
            )
            for port in rule.get("ports", [])
        }
        assert settings_defaults(service)["grpc"] in allowed, service


@pytest.mark.parametrize("name", OVERLAYS)
def test_router_config_graph_and_secrets(name: str) -> None:
    objects = overlay(name)
    assert not by_kind(objects, "Secret"), "secrets are referenced, never shipped"
    configmaps = {
        n.rsplit("-", 1)[0] if n.startswith(("ragraph-graph-", "ragraph-env-")) else n: o
        for n, o in by_kind(objects, "ConfigMap").items()
    }
    graph = configmaps["ragraph-graph"]["data"]["rag.yaml"]
    assert graph == SHIPPED_GRAPH.read_text(), "deploy/k8s/base/graph/rag.yaml drifted from the shipped graph"
    router = by_kind(objects, "Deployment")["router"]
    container = _container(router)
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in router["spec"]["template"]["spec"]["volumes"]}
    graph_volume = next(
        n for n, v in volumes.items() if v.get("configMap", {}).get("name", "").startswith("ragraph-graph")
    )
    assert env["RAGRAPH_ROUTER_GRAPH"]["value"] == f"{mounts[graph_volume]}/rag.yaml"
    (env_from,) = container["envFrom"]
    literals = configmaps["ragraph-env"]["data"]
    assert env_from["configMapRef"]["name"].startswith("ragraph-env")
    assert literals["RAGRAPH_ENCODER_URL"] == "encoder:8101" and literals["RAGRAPH_LLM_URL"] == "llm:8201"
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {"RAGRAPH_ROUTER_API_KEYS", "RAGRAPH_ROUTER_NODE_TOKEN", "PGPASSWORD"} <= set(secret_refs)
    # every environment variable a pod gets is one its service reads
    deployments = by_kind(objects, "Deployment")
    for service in SERVICES:
        container = _container(deployments[service])
        names = [e["name"] for e in container.get("env", [])]
        if service == "router":
            names += list(literals)
        assert unknown_env(service, names) == [], service
    # the nodes check the router's token: all three read the same Secret key
    for service in ("encoder", "llm"):
        env = {e["name"]: e for e in _container(deployments[service])["env"]}
        ref = env[f"RAGRAPH_{service.upper()}_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (
            secret_refs["RAGRAPH_ROUTER_NODE_TOKEN"]["name"],
            secret_refs["RAGRAPH_ROUTER_NODE_TOKEN"]["key"],
        )


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_node_token_is_required_and_the_repository_api_stays_off(name: str) -> None:
    deployments = by_kind(overlay(name), "Deployment")
    token_vars = {
        "encoder": "RAGRAPH_ENCODER_SERVICE_TOKEN",
        "llm": "RAGRAPH_LLM_SERVICE_TOKEN",
        "router": "RAGRAPH_ROUTER_NODE_TOKEN",
    }
    for service, var in token_vars.items():
        env = {e["name"]: e for e in _container(deployments[service])["env"]}
        ref = env[var]["valueFrom"]["secretKeyRef"]
        # a pod never runs without the token: no `optional`, so it waits for the Secret
        assert (ref["name"], ref["key"]) == ("ragraph-secrets", "node-token") and not ref.get("optional"), service
        other = [e["valueFrom"]["secretKeyRef"] for n, e in env.items() if n != var and "valueFrom" in e]
        assert all(r.get("optional") is True for r in other), service  # everything else stays optional
        assert not [n for n in env if n.endswith("_MODEL_REPOSITORY_API")], service


@pytest.mark.parametrize("name", OVERLAYS)
def test_service_monitor_scrapes_every_metrics_port(name: str) -> None:
    objects = overlay(name)
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    for service in by_kind(objects, "Service").values():
        port_names = {p["name"] for p in service["spec"]["ports"]}
        selected = _selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        if service["metadata"]["name"] == "postgres":  # the store's database serves no /metrics
            assert not selected and "metrics" not in port_names
            continue
        assert selected, service["metadata"]["name"]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    dashboards = [
        o for o in by_kind(objects, "ConfigMap").values() if o["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert len(dashboards) == 1


def test_gpu_overlay_shares_the_model_cache_volume() -> None:
    objects = overlay("gpu")
    (claim,) = by_kind(objects, "PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    llm = by_kind(objects, "Deployment")["llm"]
    volumes = {v["name"]: v for v in llm["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cache"] == {"name": "cache", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert _container(llm)["image"].endswith("-cuda")
    cpu_llm = by_kind(overlay("cpu"), "Deployment")["llm"]
    assert "emptyDir" in {v["name"]: v for v in cpu_llm["spec"]["template"]["spec"]["volumes"]}["cache"]


def test_base_kustomization_lists_every_manifest_file() -> None:
    base = K8S / "base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
