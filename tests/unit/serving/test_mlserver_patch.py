"""ragraph_serving.mlserver_patch: MLServer is changed only by an explicit apply(), once, and only
when the installed MLServer is in the range pyproject.toml pins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ragraph_serving import mlserver_patch
from ragraph_serving.mlserver_patch import SUPPORTED_RANGE, UnsupportedMLServer

REPO = Path(__file__).resolve().parents[3]


def _run(script: str) -> None:
    # in a process of its own: MLServer's V2 stubs and ours cannot share an interpreter
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_range_is_the_one_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [
        requirement
        for requirements in project["optional-dependencies"].values()
        for requirement in requirements
        if requirement.replace(" ", "").startswith("mlserver") and not requirement.startswith("mlserver-")
    ]
    assert pins, "pyproject.toml pins no mlserver"
    assert {pin.replace(" ", "") for pin in pins} == {f"mlserver{SUPPORTED_RANGE}"}


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.7.1", True),
        ("1.7.1.post1", True),
        ("1.7.9", True),
        ("1.7.10", True),
        ("1.7.0", False),
        ("1.7", False),
        ("1.7.1rc1", False),
        ("1.7.1.dev0", False),
        ("1.8.0rc1", False),
        ("1.8.0", False),
        ("1.8", False),
        ("2.0.0", False),
        ("1.6.1", False),
    ],
)
def test_supported_versions(version: str, ok: bool) -> None:
    assert mlserver_patch.supported(version) is ok


def test_the_installed_mlserver_is_supported() -> None:
    mlserver_patch.check_version()


@pytest.mark.parametrize("version", ["1.8.0", "1.6.1"])
def test_apply_refuses_another_mlserver_naming_both_versions(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(mlserver_patch, "installed_version", lambda: version)
    with pytest.raises(UnsupportedMLServer) as refused:
        mlserver_patch.apply()
    message = str(refused.value)
    assert f"mlserver {version} is installed" in message
    assert ">=1.7.1,<1.8" in message
    assert "pip install 'mlserver>=1.7.1,<1.8'" in message


def test_importing_runtimes_changes_nothing_and_apply_patches_once() -> None:
    _run(
        """
import mlserver.grpc.server as grpc_server
import mlserver.rest.server as rest_server
from mlserver.grpc.model_repository import ModelRepositoryServicer
from mlserver.grpc.servicers import InferenceServicer

def snapshot():
    return (dict(vars(grpc_server)), dict(vars(grpc_server.GRPCServer)), dict(vars(rest_server)))

def same(a, b):
    return all(x.keys() == y.keys() and all(x[k] is y[k] for k in x) for x, y in zip(a, b))

before = snapshot()
import ragraph_serving.runtime, ragraph_serving.server, ragraph_serving.servicer, ragraph_serving.health
import ragraph_serving.mlserver_env
import ragraph_encoder.runtime, ragraph_encoder.server
import ragraph_llm.runtime, ragraph_llm.server
assert same(before, snapshot()), "an import changed MLServer"
assert grpc_server.InferenceServicer is InferenceServicer

from ragraph_serving import mlserver_patch
real = mlserver_patch.installed_version
mlserver_patch.installed_version = lambda: "1.8.0"
try:
    mlserver_patch.apply()
except mlserver_patch.UnsupportedMLServer:
    pass
else:
    raise AssertionError("applied on 1.8.0")
assert same(before, snapshot()), "a refused apply() changed MLServer"
assert not mlserver_patch.applied()
mlserver_patch.installed_version = real

mlserver_patch.apply()
assert not same(before, snapshot())
assert mlserver_patch.applied()
from ragraph_serving.servicer import GuardedRepositoryServicer, RagraphInferenceServicer
assert grpc_server.InferenceServicer is RagraphInferenceServicer
assert grpc_server.ModelRepositoryServicer is GuardedRepositoryServicer
wrapped = (grpc_server.GRPCServer._create_server, grpc_server.GRPCServer.stop, rest_server.create_app)
for function in wrapped:
    assert function.__module__ == "ragraph_serving.mlserver_patch", function.__module__
once = snapshot()
mlserver_patch.apply()
assert same(once, snapshot()), "applied twice"
assert (grpc_server.GRPCServer._create_server, grpc_server.GRPCServer.stop, rest_server.create_app) == wrapped
"""
    )


def test_the_factory_applies_the_patches() -> None:
    _run(
        """
import mlserver.grpc.server as grpc_server
from ragraph_serving import access, mlserver_patch
from ragraph_serving.server import create_mlserver
from ragraph_serving.settings import ServingSettings

assert not mlserver_patch.applied()
create_mlserver(ServingSettings(service_token="t", model_repository_api=True), [], "t")
assert mlserver_patch.applied()
assert grpc_server.InferenceServicer.__module__ == "ragraph_serving.servicer"
assert access.allowed("t") and not access.allowed("u") and access.repository_api_enabled()
"""
    )
