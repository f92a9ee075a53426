"""The Grafana dashboard, the alert rules, the KEDA query and docs/deploy.md name only metrics the
services export (ragraph's own, and MLServer's on the encoder), and the dashboard has the panels
the operators need: rate, errors, TTFT, tokens/s, the llm queue, per-node and end-to-end latency,
rejections, the encoder."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from deploy_checks import K8S, REPO

DASHBOARD = K8S / "base" / "observability" / "ragraph-dashboard.json"
METRIC = re.compile(r"\bragraph_(?:router|llm|encoder)_[a-z0-9_]+")
MLSERVER_METRIC = re.compile(r"\bmodel_infer_request_[a-z0-9_]+")
# MLServer's data-plane series (its own registry; run apart: MLServer's stubs and ours do not mix)
_MLSERVER_NAMES = """
import json
from prometheus_client import REGISTRY
from mlserver.handlers.dataplane import DataPlane
from mlserver.registry import MultiModelRegistry
from mlserver.settings import Settings
DataPlane(Settings(), MultiModelRegistry())
print(json.dumps(sorted(f.name for f in REGISTRY.collect() if f.name.startswith("model_infer_request"))))
"""


def mlserver_exported() -> set[str]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MLSERVER_NAMES], capture_output=True, text=True, timeout=120)
    families = json.loads(out.stdout.strip().splitlines()[-1])
    assert families, out.stderr
    return {f"{f}{suffix}" for f in families for suffix in ("_total", "_sum", "_count")}


def _alert_exprs() -> str:
    docs = yaml.safe_load_all((K8S / "base" / "observability.yaml").read_text())
    (rule,) = [d for d in docs if d and d["kind"] == "PrometheusRule"]
    return " ".join(r["expr"] for group in rule["spec"]["groups"] for r in group["rules"])


def exported() -> set[str]:
    """Every family and sample name the router and the LLM engine export."""
    from prometheus_client import CollectorRegistry
    from ragraph_llm.metrics import EngineMetrics
    from ragraph_router.telemetry import RouterMetrics

    names: set[str] = set()
    for build in (RouterMetrics, EngineMetrics):
        registry = CollectorRegistry()
        build(registry)
        for family in registry.collect():
            names.add(family.name)
            names |= {f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum")}
            names |= {sample.name for sample in family.samples}
    return names


def _dashboard_exprs() -> dict[str, list[str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}


def test_dashboard_keda_and_docs_name_real_metrics() -> None:
    names = exported()
    texts = {
        "dashboard": " ".join(e for exprs in _dashboard_exprs().values() for e in exprs),
        "llm.yaml (KEDA)": (K8S / "base" / "llm.yaml").read_text(),
        "docs/deploy.md": (REPO / "docs" / "deploy.md").read_text(),
        "observability.yaml (alerts)": _alert_exprs(),
    }
    for where, text in texts.items():
        used = set(METRIC.findall(text))
        assert used, where
        assert used <= names, f"{where} names metrics nobody exports: {sorted(used - names)}"
    mlserver = mlserver_exported()
    used = set(MLSERVER_METRIC.findall(texts["dashboard"]))
    assert used and used <= mlserver, f"dashboard names MLServer metrics it does not export: {sorted(used - mlserver)}"


@pytest.mark.parametrize(
    ("panel", "metric"),
    [
        ("Requests per second", "ragraph_router_requests_total"),
        ("Errors by gRPC code", "ragraph_router_requests_total"),
        ("Time to first token", "ragraph_router_ttft_seconds_bucket"),
        ("Tokens per second", "ragraph_router_completion_tokens_total"),
        ("LLM queue depth", "ragraph_llm_queue_depth"),
        ("Per-node latency", "ragraph_router_node_seconds_bucket"),
        ("End-to-end latency", "ragraph_router_request_seconds_bucket"),
        ("LLM rejections", "ragraph_llm_rejected_requests_total"),
        ("Encoder", 'model_infer_request_duration_sum{service="encoder"}'),
    ],
)
def test_dashboard_has_the_panels_operators_need(panel: str, metric: str) -> None:
    matches = [exprs for title, exprs in _dashboard_exprs().items() if title.startswith(panel)]
    assert matches, f"no panel {panel!r}"
    assert any(metric in e for e in matches[0])
    if panel.startswith("Errors"):
        assert any("by (code)" in e for e in matches[0])
    if panel.startswith("Per-node"):
        assert any("by (le, node)" in e for e in matches[0])


def test_dashboard_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load((REPO / "deploy/compose/grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["current"]["value"] == uid
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
