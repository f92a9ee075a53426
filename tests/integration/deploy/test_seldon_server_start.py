"""ragraph's Seldon Core 2 Servers start the way Seldon starts them.

The pod is what Seldon's operator makes of deploy/seldon/core-v2/server.yaml over the published
``mlserver`` ServerConfig (tests/unit/deploy/seldon_pod.py). Its ``mlserver`` container gets no
command, so the image's ENTRYPOINT + CMD (parsed from the Dockerfile) run, here as a local
process, with the container's environment: the same MLSERVER_* and RAGRAPH_* values, except that
the ports become free loopback ports, the models dir a temp dir, /cache a temp dir, and the LLM
the tiny test model. Then the test does what Seldon does: waits for the container's probe
(HTTP /v2/health/live on MLSERVER_HTTP_PORT), writes each model's folder as the agent does
(``<models dir>/<name>_1/1/model-settings.json``, renamed ``<name>_1``), loads it with gRPC
RepositoryModelLoad without credentials, as the agent's control plane does, and infers on it over
gRPC; the llm streams one response per delta."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from tests.fixtures.servers import REPO, free_port, stop_process
from tests.unit.deploy import seldon_pod
from tests.unit.deploy.deploy_checks import load_dockerfile

MODELS = {"llm": ["llm"], "encoder": ["encoder", "classifier"]}
LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"  # what Seldon's agent calls


def _servers() -> dict[str, dict]:
    path = REPO / "deploy" / "seldon" / "core-v2" / "server.yaml"
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def image_command(service: str) -> list[str]:
    """ENTRYPOINT + CMD of the service's image (exec form), as the container runtime runs them."""
    dockerfile = load_dockerfile(service)
    parts: list[str] = []
    for kind in ("ENTRYPOINT", "CMD"):
        found = dockerfile.final(kind)
        if found:
            text = found[-1]
            parts += json.loads(text) if text.startswith("[") else ["/bin/sh", "-c", text]
    return parts


def image_env(service: str) -> dict[str, str]:
    """The image's ENV (KEY=VALUE form; a later line wins)."""
    env: dict[str, str] = {}
    for line in load_dockerfile(service).final("ENV"):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def _agent_writes(models_dir: Path, service: str, model: str) -> str:
    """What Seldon's agent does with a Model whose storageUri holds services/<svc>/<model>/: copy it
    to <models dir>/<model>_1/1/ and rewrite model-settings.json's name and version (through a
    Go struct that keeps name, implementation and parameters)."""
    versioned = f"{model}_1"
    source = json.loads((REPO / "services" / service / model / "model-settings.json").read_text())
    settings = {
        "name": versioned,
        "implementation": source["implementation"],
        "parameters": {**source.get("parameters", {}), "version": "1"},
    }
    folder = models_dir / versioned / "1"
    folder.mkdir(parents=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return versioned


def _load(grpc_url: str, model: str) -> None:
    name = model.encode()
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary(LOAD, request_serializer=None, response_deserializer=None)
        call(b"\x12" + bytes([len(name)]) + name, timeout=300)  # RepositoryModelLoadRequest{model_name=2}


def _live(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Container:
    def __init__(self, service: str, tmp: Path, tiny_llm_dir: Path) -> None:
        self.service = service
        server = _servers()[f"ragraph-{service}"]
        self.pod = seldon_pod.pod_spec(server)
        self.container = seldon_pod.container(self.pod)
        self.seldon_env = seldon_pod.plain_env(self.container)
        self.command = image_command(service)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.models_dir = tmp / "models"
        self.models_dir.mkdir()
        cache = tmp / "cache"
        local = {  # what differs from the pod: where things are on this machine
            "MLSERVER_HTTP_PORT": str(self.http_port),
            "MLSERVER_GRPC_PORT": str(self.grpc_port),
            "MLSERVER_METRICS_PORT": str(self.metrics_port),  # the ServerConfig leaves MLServer's 8082
            "MLSERVER_MODELS_DIR": str(self.models_dir),
            "HF_HOME": str(cache / "huggingface"),
            "RAGRAPH_LLM_CACHE_DIR": str(cache / "ragraph-llm"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the image's venv: ours
            "HF_HUB_OFFLINE": "1",
        }
        if service == "llm":
            local["RAGRAPH_LLM_MODEL"] = str(tiny_llm_dir)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "RAGRAPH_"))}
        self.env = {**inherited, **image_env(service), **self.seldon_env, **local}
        self.log_path = tmp / f"{service}.log"

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self.process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_live(self, timeout: float = 120.0) -> None:
        """Seldon's probes on the container: HTTP GET /v2/health/live on server-http."""
        deadline = time.monotonic() + timeout
        while not _live(self.http_port):
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not live after {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.25)


@pytest.fixture(params=["llm", "encoder"])
def container(request: pytest.FixtureRequest, tmp_path: Path, tiny_llm_dir: Path) -> Iterator[Container]:
    started = Container(request.param, tmp_path, tiny_llm_dir)
    started.start()
    yield started
    stop_process(started.process, 20)


def test_the_server_container_runs_the_image_command_with_seldons_settings(container: Container) -> None:
    c, env = container.container, container.seldon_env
    # Seldon gives the container no command: the image's own runs, and it is ragraph serve
    assert "command" not in c and "args" not in c
    assert container.command[:2] == ["ragraph", "serve"]
    # the ServerConfig's agent talks to 9000/9500 and probes server-http; the image must bind those
    ports = seldon_pod.ports(c)
    assert (int(env["MLSERVER_HTTP_PORT"]), int(env["MLSERVER_GRPC_PORT"])) == (
        ports["server-http"],
        ports["server-grpc"],
    )
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "server-http"}
    assert env["MLSERVER_MODELS_DIR"] == "/mnt/agent/models"
    assert env["MLSERVER_LOAD_MODELS_AT_STARTUP"] == "false"
    assert env["MLSERVER_PARALLEL_WORKERS"] == "0"  # ours, after the ServerConfig's "1"
    container.wait_live()
    # up on the ports Seldon gave it, with no model until the agent loads one
    log = container.log()
    assert f"serving V2 gRPC on :{container.grpc_port}, REST on :{container.http_port}" in log
    assert "models at start: none yet" in log


def test_the_agent_loads_each_model_and_it_answers(container: Container) -> None:
    from ragraph_client.client import InferenceClient

    container.wait_live()
    service = container.service
    grpc_url = f"127.0.0.1:{container.grpc_port}"
    with InferenceClient(grpc_url, timeout=60) as client:
        for model in MODELS[service]:
            versioned = _agent_writes(container.models_dir, service, model)
            assert _state(client, versioned) == "NOT_FOUND"  # nothing loaded at start
            _load(grpc_url, versioned)
            assert _state(client, versioned) == "ready"
        if service == "encoder":
            assert client.infer("encoder_1", {"text": ["hello"]}).output("embedding").shape == [1, 384]
            label = client.infer("classifier_1", {"text": ["what is a vector store?"]}).output("label")
            assert label.shape == [1] and label.as_strings()[0]
        else:
            params = {"temperature": "0", "max_tokens": 12}
            deltas = [
                r.outputs[0].as_strings()[0]
                for r in client.stream("llm_1", {"prompt": ["Hello"]}, params, style="mlserver")
            ]
            assert len(deltas) > 3, "token streaming survives under Seldon's settings"
            whole = client.infer("llm_1", {"prompt": ["Hello"]}, params).outputs[0].as_strings()[0]
            assert "".join(deltas) == whole
    assert "MLSERVER_PARALLEL_WORKERS" not in container.log()  # 0 asked: no warning


def _state(client: object, model: str) -> str:
    """'ready', 'not ready', or the gRPC code ModelReady answered."""
    from ragraph_client.errors import RagraphError

    try:
        return "ready" if client.model_ready(model) else "not ready"  # type: ignore[attr-defined]
    except RagraphError as exc:
        return exc.code.name


def test_a_repository_that_nothing_could_fill_refuses_to_start(tmp_path: Path, tiny_llm_dir: Path) -> None:
    started = Container("llm", tmp_path, tiny_llm_dir)
    del started.env["RAGRAPH_LLM_MODEL_REPOSITORY_API"]  # the Server spec without the switch
    done = subprocess.run(started.command, env=started.env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "ragraph: MLSERVER_LOAD_MODELS_AT_STARTUP is false, so models arrive only through the model repository "
        "API, which is off: set RAGRAPH_LLM_MODEL_REPOSITORY_API=true (Seldon Core 2's agent loads models that way)"
    )


def test_parallel_workers_asked_by_the_server_config_do_not_cost_streaming(tmp_path: Path, tiny_llm_dir: Path) -> None:
    from ragraph_client.client import InferenceClient

    started = Container("llm", tmp_path, tiny_llm_dir)
    started.env["MLSERVER_PARALLEL_WORKERS"] = "1"  # the ServerConfig's value, had the Server not set 0
    started.start()
    try:
        started.wait_live()
        grpc_url = f"127.0.0.1:{started.grpc_port}"
        _load(grpc_url, _agent_writes(started.models_dir, "llm", "llm"))
        with InferenceClient(grpc_url, timeout=60) as client:
            params = {"temperature": "0", "max_tokens": 24}  # deltas a slow reader falls behind on arrive coalesced
            responses = list(client.stream("llm_1", {"prompt": ["Hi"]}, params, style="mlserver"))
        assert len(responses) > 3
        assert "MLSERVER_PARALLEL_WORKERS=1 ignored" in started.log()
    finally:
        stop_process(started.process, 20)
