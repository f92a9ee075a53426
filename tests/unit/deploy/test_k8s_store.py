"""deploy/k8s, the vector store: the routers default to ``postgres://`` on the in-cluster PostgreSQL
+ pgvector (components/postgres, in the cpu and gpu overlays), wired to the same Secret key as the
database, reachable only from routers and ingest jobs; overlays/cpu-pinecone swaps it for Pinecone
(components/pinecone) and leaves no PostgreSQL object behind; either store URI is one the store
code accepts, and neither needs its secret for the router to start."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from deploy_checks import K8S, by_kind, kubectl, render, unknown_env
from ragraph_client.errors import Unauthenticated, Unavailable

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: `kubectl kustomize` renders")

POSTGRES_OVERLAYS = ["cpu", "gpu"]


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return render(str(K8S / "overlays" / name))


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _router_literals(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    (config,) = [o for n, o in by_kind(objects, "ConfigMap").items() if n.startswith("ragraph-env-")]
    return dict(config["data"])


@pytest.mark.parametrize("name", POSTGRES_OVERLAYS)
def test_routers_default_to_the_in_cluster_postgres(name: str) -> None:
    objects = overlay(name)
    database = by_kind(objects, "StatefulSet")["postgres"]
    service = by_kind(objects, "Service")["postgres"]
    store = urlsplit(_router_literals(objects)["RAGRAPH_STORE"])
    assert store.scheme == "postgres" and store.password is None  # the password is never in the URI
    assert store.hostname == service["metadata"]["name"]
    assert store.port in {p["port"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"].items() <= database["spec"]["template"]["metadata"]["labels"].items()
    assert database["spec"]["serviceName"] == service["metadata"]["name"]
    db_env = _env(_container(database))
    assert (store.username, store.path) == (db_env["POSTGRES_USER"]["value"], "/" + db_env["POSTGRES_DB"]["value"])
    # the router's PGPASSWORD and the database's password are the same Secret key
    router_ref = _env(_container(by_kind(objects, "Deployment")["router"]))["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    db_ref = db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (
        (router_ref["name"], router_ref["key"])
        == (db_ref["name"], db_ref["key"])
        == (
            "ragraph-secrets",
            "postgres-password",
        )
    )
    assert router_ref.get("optional") is True and not db_ref.get("optional")  # the router starts without it


@pytest.mark.parametrize("name", POSTGRES_OVERLAYS)
def test_the_database_keeps_its_data_and_runs_locked_down(name: str) -> None:
    database = by_kind(overlay(name), "StatefulSet")["postgres"]
    container = _container(database)
    assert container["image"].startswith("pgvector/pgvector:pg")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = database["spec"]["volumeClaimTemplates"]
    assert _env(container)["PGDATA"]["value"].startswith(mounts[claim["metadata"]["name"]] + "/")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    pod = database["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {mounts[v["name"]] for v in pod["volumes"] if "emptyDir" in v}
    assert {"/var/run/postgresql", "/tmp"} <= writable  # the socket and lock files, temp files
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert database["spec"]["replicas"] == 1
    assert unknown_env("router", list(_env(_container(by_kind(overlay(name), "Deployment")["router"])))) == []


@pytest.mark.parametrize("name", POSTGRES_OVERLAYS)
def test_only_routers_and_ingest_jobs_reach_the_database(name: str) -> None:
    policies = [
        p
        for p in by_kind(overlay(name), "NetworkPolicy").values()
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "postgres"
    ]
    (policy,) = policies
    (rule,) = policy["spec"]["ingress"]
    peers = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # no namespace or IP peers
    assert peers == [{"app.kubernetes.io/name": "router"}, {"ragraph.io/store-client": "true"}]
    assert [p["port"] for p in rule["ports"]] == [5432]


def test_the_pinecone_overlay_swaps_the_store_and_leaves_no_postgres() -> None:
    import kubernetes_validate

    objects = overlay("cpu-pinecone")
    for obj in objects:
        if obj["kind"] not in {"ScaledObject", "ServiceMonitor", "PrometheusRule"}:
            kubernetes_validate.validate(obj, "1.32.0", strict=True)
    assert not by_kind(objects, "StatefulSet") and "postgres" not in by_kind(objects, "Service")
    assert "postgres-ingress" not in by_kind(objects, "NetworkPolicy")
    store = urlsplit(_router_literals(objects)["RAGRAPH_STORE"])
    assert (store.scheme, store.netloc) == ("pinecone", "ragraph")
    env = _env(_container(by_kind(objects, "Deployment")["router"]))
    assert "PGPASSWORD" not in env
    ref = env["PINECONE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], ref["optional"]) == ("ragraph-secrets", "pinecone-api-key", True)
    # the rest is the cpu overlay's
    cpu = overlay("cpu")
    assert by_kind(objects, "Deployment")["llm"] == by_kind(cpu, "Deployment")["llm"]
    assert _router_literals(objects).keys() == _router_literals(cpu).keys()


@pytest.mark.parametrize("name", ["cpu", "cpu-pinecone"])
def test_the_router_opens_its_store_without_the_secret(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the router does at start with the shipped URI: no connection, no key needed; the first
    query says what is missing."""
    from ragraph_retrieval.store import open_store

    monkeypatch.delenv("PINECONE_API_KEY", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    uri = _router_literals(overlay(name))["RAGRAPH_STORE"]
    if uri.startswith("postgres://"):  # the cluster's host name does not resolve here
        uri = uri.replace("@postgres:5432/", "@127.0.0.1:1/") + "&retries=0"
    store = open_store(uri)
    with pytest.raises(Unavailable if name == "cpu" else Unauthenticated):
        store.query(np.ones(384, np.float32))
