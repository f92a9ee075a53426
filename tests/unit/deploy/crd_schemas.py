"""Schemas for the custom resources ragraph ships (kubernetes-validate has only the core API).

Seldon Core 2 (Model, Server), KServe (ServingRuntime, InferenceService) and the Prometheus
Operator (ServiceMonitor, PrometheusRule) are checked against their published CRDs, stored in
data/crds/ (crd_extract.py made them; each names its source commit), with unknown fields refused
as the API server's strict field validation does. KEDA's ScaledObject and Seldon Core 1's
SeldonDeployment keep small hand-written schemas (what each requires, the types of the fields we
use, the fields each level accepts), written from their documentation."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "crds"

_STR = {"type": "string"}
_INT = {"type": "integer"}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "namespace": _STR,
                    "labels": _STRMAP,
                    "annotations": _STRMAP,
                },
            },
            "spec": spec,
        },
    }


SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"name": _STR, "kind": _STR, "apiVersion": _STR, "envSourceContainerName": _STR},
            },
            "pollingInterval": _INT,
            "cooldownPeriod": _INT,
            "initialCooldownPeriod": _INT,
            "idleReplicaCount": _INT,
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "fallback": {"type": "object"},
            "advanced": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"name": _STR, "behavior": {"type": "object"}},
                    },
                    "scalingModifiers": {"type": "object"},
                },
            },
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": _STR,
                        "name": _STR,
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "useCachedMetrics": {"type": "boolean"},
                        "authenticationRef": {"type": "object"},
                        "metadata": _STRMAP,  # KEDA trigger metadata values are strings
                    },
                    # the prometheus scaler's required metadata
                    "if": {"properties": {"type": {"const": "prometheus"}}},
                    "then": {"properties": {"metadata": {"required": ["serverAddress", "query", "threshold"]}}},
                },
            },
        },
    },
)

_GRAPH_NODE: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "type": {"enum": ["MODEL", "COMBINER", "ROUTER", "TRANSFORMER", "OUTPUT_TRANSFORMER", "UNKNOWN_TYPE"]},
        "implementation": _STR,
        "modelUri": _STR,
        "serviceAccountName": _STR,
        "endpoint": {"type": "object"},
        "parameters": {"type": "array"},
        "logger": {"type": "object"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
    },
}

SELDON_DEPLOYMENT = {
    **_resource(
        "machinelearning.seldon.io/v1",
        "SeldonDeployment",
        {
            "type": "object",
            "required": ["predictors"],
            "additionalProperties": False,
            "properties": {
                "name": _STR,
                "protocol": {"enum": ["seldon", "tensorflow", "v2", "kfserving"]},
                "transport": {"enum": ["rest", "grpc"]},
                "annotations": _STRMAP,
                "replicas": _INT,
                "serverType": {"enum": ["rpc", "kafka"]},
                "predictors": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "graph"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _STR,
                            "replicas": _INT,
                            "traffic": _INT,
                            "labels": _STRMAP,
                            "annotations": _STRMAP,
                            "graph": {"$ref": "#/$defs/node"},
                            "componentSpecs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["spec"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "metadata": {"type": "object"},
                                        "spec": {"type": "object", "required": ["containers"]},
                                        "hpaSpec": {"type": "object"},
                                        "kedaSpec": {"type": "object"},
                                        "pdbSpec": {"type": "object"},
                                        "replicas": _INT,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    "$defs": {"node": _GRAPH_NODE},
}

HAND_WRITTEN = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("machinelearning.seldon.io/v1", "SeldonDeployment"): SELDON_DEPLOYMENT,
}

# The published CRDs (data/crds/*.json.gz, made by crd_extract.py: each file names its source
# repository, path and commit), by the kind they define.
CRD_FILES = {
    ("mlops.seldon.io/v1alpha1", "Model"): "mlops.seldon.io_model",
    ("mlops.seldon.io/v1alpha1", "Server"): "mlops.seldon.io_server",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservice",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule",
}
_METADATA = _resource("", "", {})["properties"]["metadata"]


def _strict(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema that, like the API server's strict field
    validation (kubectl apply --validate=strict), refuses fields the schema does not declare."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False if "properties" in node else out.get("additionalProperties", True)
    return out


@functools.cache
def published(api_version: str, kind: str) -> dict[str, Any]:
    """The published CRD's schema for ``kind`` (strict, see :func:`_strict`), metadata checked as
    Kubernetes names it."""
    data = json.loads(gzip.decompress((DATA / f"{CRD_FILES[(api_version, kind)]}.json.gz").read_bytes()))
    assert (data["apiVersion"], data["kind"]) == (api_version, kind)
    schema = _strict(data["schema"])
    schema["properties"]["metadata"] = _METADATA
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def crd_source(api_version: str, kind: str) -> str:
    """Where the stored schema of ``kind`` came from (repository, path, commit)."""
    path = DATA / f"{CRD_FILES[(api_version, kind)]}.json.gz"
    return str(json.loads(gzip.decompress(path.read_bytes()))["source"])


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of a custom resource (a KeyError for a kind we have no schema for)."""
    import jsonschema

    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = published(*key) if key in CRD_FILES else HAND_WRITTEN[key]
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj))
