"""ragraph_serving.health: what grpc.health.v1 says while MLServer's registry loads, serves,
unloads and shuts down (a fake data plane; the real service is in tests/integration/deploy; how MLServer's gRPC
server gets it: tests/unit/serving/test_mlserver_patch.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from grpc_health.v1 import health_pb2
from ragraph_serving.health import HealthReporter

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class FakeModel:
    name: str
    ready: bool = False


@dataclass
class FakeRegistry:
    models: list[FakeModel] = field(default_factory=list)

    async def get_models(self) -> list[FakeModel]:
        return list(self.models)


@dataclass
class FakeDataPlane:
    _model_registry: FakeRegistry = field(default_factory=FakeRegistry)


def _status(reporter: HealthReporter) -> dict[str, int]:
    return dict(reporter.servicer._server_status)


async def test_not_serving_until_every_model_is_ready() -> None:
    plane = FakeDataPlane()
    reporter = HealthReporter(plane)
    assert _status(reporter) == {"": NOT_SERVING}  # grpc's reference servicer would say SERVING here
    await reporter.refresh()
    assert _status(reporter) == {"": NOT_SERVING}  # nothing registered yet is not "ready"

    encoder, classifier = FakeModel("encoder"), FakeModel("classifier")
    plane._model_registry.models = [encoder, classifier]
    await reporter.refresh()
    assert _status(reporter) == {"": NOT_SERVING, "encoder": NOT_SERVING, "classifier": NOT_SERVING}

    encoder.ready = True
    await reporter.refresh()
    assert _status(reporter) == {"": NOT_SERVING, "encoder": SERVING, "classifier": NOT_SERVING}

    classifier.ready = True
    await reporter.refresh()
    assert _status(reporter) == {"": SERVING, "encoder": SERVING, "classifier": SERVING}


async def test_a_version_that_is_not_ready_makes_its_model_not_serving() -> None:
    plane = FakeDataPlane(FakeRegistry([FakeModel("llm", ready=True), FakeModel("llm", ready=False)]))
    reporter = HealthReporter(plane)
    await reporter.refresh()
    assert _status(reporter) == {"": NOT_SERVING, "llm": NOT_SERVING}


async def test_unloaded_model_and_shutdown_turn_not_serving() -> None:
    plane = FakeDataPlane(FakeRegistry([FakeModel("llm", ready=True)]))
    reporter = HealthReporter(plane)
    await reporter.refresh()
    assert _status(reporter) == {"": SERVING, "llm": SERVING}
    plane._model_registry.models = []
    await reporter.refresh()
    assert _status(reporter) == {"": NOT_SERVING, "llm": NOT_SERVING}

    plane._model_registry.models = [FakeModel("llm", ready=True)]
    await reporter.refresh()
    reporter.start()
    await reporter.shutdown()
    assert set(_status(reporter).values()) == {NOT_SERVING}
    await reporter.refresh()  # after shutdown nothing turns it back on
    assert set(_status(reporter).values()) == {NOT_SERVING}
