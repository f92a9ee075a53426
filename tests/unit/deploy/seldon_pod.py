"""The pod Seldon Core 2's operator makes of a ragraph Server: the published ``mlserver``
ServerConfig (data/seldon/serverconfig-mlserver.yaml) with the Server's podSpec merged over it,
the way the operator's MergePodSpecs does (mergo with override and append-slice: set fields
replace, lists are appended, containers are matched by name), and what the kubelet then hands
the ``mlserver`` container (the last of two env entries with one name wins)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SERVER_CONFIG = Path(__file__).resolve().parent / "data" / "seldon" / "serverconfig-mlserver.yaml"


def _merge(dst: Any, src: Any) -> Any:
    if isinstance(dst, dict) and isinstance(src, dict):
        out = dict(dst)
        for key, value in src.items():
            out[key] = _merge(dst[key], value) if key in dst else copy.deepcopy(value)
        return out
    if isinstance(dst, list) and isinstance(src, list):
        return [*dst, *copy.deepcopy(src)]
    return copy.deepcopy(src) if src not in (None, "", 0, False, [], {}) else dst


def server_config() -> dict[str, Any]:
    (config,) = [d for d in yaml.safe_load_all(SERVER_CONFIG.read_text()) if d]
    assert config["kind"] == "ServerConfig" and config["metadata"]["name"] == "mlserver"
    return config


def pod_spec(server: dict[str, Any]) -> dict[str, Any]:
    """The merged pod spec of ``server`` (a Server resource over the mlserver ServerConfig)."""
    base = server_config()["spec"]["podSpec"]
    override = server["spec"].get("podSpec") or {}
    merged = _merge(
        {k: v for k, v in base.items() if k != "containers"}, {k: v for k, v in override.items() if k != "containers"}
    )
    containers = {c["name"]: c for c in base["containers"]}
    for container in override.get("containers", []):
        name = container["name"]
        containers[name] = _merge(containers[name], container) if name in containers else container
    merged["containers"] = list(containers.values())
    return merged


def container(pod: dict[str, Any], name: str = "mlserver") -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal env as the kubelet resolves duplicates (the last one wins);
    valueFrom entries (pod fields, resources) are left out."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            env.pop(entry["name"], None)
    return env


def ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}
