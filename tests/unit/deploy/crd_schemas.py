"""Small hand-written JSON schemas for the custom resources ragraph ships (kubernetes-validate has
only the core API). They hold what each CRD requires, the types of the fields we use, and the
set of fields each level accepts, so that a missing or misspelt field fails a test. Written from
the CRDs' documentation: KEDA v2 ScaledObject, Prometheus Operator ServiceMonitor, Seldon Core 1
SeldonDeployment, Seldon Core 2 Model and Server."""

from __future__ import annotations

from typing import Any

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
                },  # fmt: skip
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

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": _STRMAP, "matchExpressions": {"type": "array"}},
            },
            "namespaceSelector": {"type": "object"},
            "jobLabel": _STR,
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                    "properties": {
                        "port": _STR,
                        "targetPort": {"type": ["string", "integer"]},
                        "path": _STR,
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array"},
                        "metricRelabelings": {"type": "array"},
                    },
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

SELDON_MODEL = _resource(
    "mlops.seldon.io/v1alpha1",
    "Model",
    {
        "type": "object",
        "required": ["storageUri"],
        "additionalProperties": False,
        "properties": {
            "storageUri": {"type": "string", "pattern": "^(gs|s3|https?|file|azure)://"},
            "artifactVersion": _INT,
            "schemaUri": _STR,
            "requirements": {"type": "array", "items": _STR},
            "memory": {"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"},
            "server": _STR,
            "preloaded": {"type": "boolean"},
            "dedicated": {"type": "boolean"},
            "replicas": {"type": "integer", "minimum": 0},
            "minReplicas": _INT,
            "maxReplicas": _INT,
            "parameters": {"type": "array"},
            "logger": {"type": "object"},
            "explainer": {"type": "object"},
            "llm": {"type": "object"},
        },
    },
)

SELDON_SERVER = _resource(
    "mlops.seldon.io/v1alpha1",
    "Server",
    {
        "type": "object",
        "required": ["serverConfig"],
        "additionalProperties": False,
        "properties": {
            "serverConfig": _STR,
            "replicas": _INT,
            "minReplicas": _INT,
            "maxReplicas": _INT,
            "capabilities": {"type": "array", "items": _STR},
            "extraCapabilities": {"type": "array", "items": _STR},
            "podSpec": {
                "type": "object",
                "properties": {
                    "containers": {
                        "type": "array",
                        "items": {"type": "object", "required": ["name"]},
                    }
                },
            },
            "statefulSetPersistentVolumeClaimRetentionPolicy": {"type": "object"},
            "disableAutoUpdate": {"type": "boolean"},
        },
    },
)

BY_KIND = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("machinelearning.seldon.io/v1", "SeldonDeployment"): SELDON_DEPLOYMENT,
    ("mlops.seldon.io/v1alpha1", "Model"): SELDON_MODEL,
    ("mlops.seldon.io/v1alpha1", "Server"): SELDON_SERVER,
}


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of a custom resource (a KeyError for a kind we have no schema for)."""
    import jsonschema

    schema = BY_KIND[(obj.get("apiVersion", ""), obj.get("kind", ""))]
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj))
