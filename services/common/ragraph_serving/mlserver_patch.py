"""Everything ragraph changes in MLServer, and every private member of it ragraph reads.

MLServer (pinned ``mlserver>=1.7.1,<1.8``) has no public hook for what a ragraph node adds to its
servers, so :func:`apply` patches them, once, when ragraph's server factory asks for it
(:func:`ragraph_serving.server.create_mlserver`, which ``ragraph serve encoder|llm`` and the
``MLSERVER_MODELS_DIR`` launch of :mod:`.mlserver_env` both go through, before they build the
MLServer). Importing a ragraph module changes nothing in MLServer. After :func:`apply`:

- the gRPC server builds ragraph's V2 servicers (:mod:`.servicer`: request validation, error
  codes kept, the service token and the model repository switch, streams a client may cancel)
  in place of MLServer's (``mlserver.grpc.server.InferenceServicer`` and
  ``ModelRepositoryServicer`` replaced);
- the gRPC server also serves grpc.health.v1 (:mod:`.health`), which turns NOT_SERVING before
  MLServer's grace period on shutdown (``GRPCServer._create_server`` and ``stop`` wrapped);
- the REST app checks the service token and the repository switch
  (:class:`.access.RestTokenMiddleware`; ``mlserver.rest.server.create_app`` wrapped).

:func:`apply` refuses an MLServer outside the pinned range (:class:`UnsupportedMLServer`): the
patches and the accessors below are written against that range's internals.

Plain ``mlserver start FOLDER`` does not go through the factory and serves MLServer's own
servicers: it builds its servers before it imports any runtime (the models load after the servers
have started), so no runtime's ``load()`` could apply the patches in time.

The accessors give the rest of ragraph what MLServer keeps private: a server's models
(:func:`hosted_models`, :func:`hosted_model`), the data plane's request context and metrics
(:func:`infer_context`, :func:`stream_context`) and extra gRPC server options
(:func:`grpc_server_options`, :func:`set_grpc_server_options`). :mod:`.servicer` subclasses
MLServer's servicers and calls their own helpers (``_data_plane``, ``_InsertHeaders``, ...).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # MLServer's V2 stubs load with mlserver.grpc: not on import of this module
    from mlserver import MLModel
    from mlserver.settings import Settings

log = logging.getLogger("ragraph.serving")

MINIMUM_VERSION = "1.7.1"
BELOW_VERSION = "1.8"
SUPPORTED_RANGE = f">={MINIMUM_VERSION},<{BELOW_VERSION}"  # pyproject.toml pins the same range

_APPLIED = "_ragraph_patched"  # set on mlserver.grpc.server once apply() has run


class UnsupportedMLServer(RuntimeError):
    """The installed MLServer is outside the range ragraph's patches are written for."""


def installed_version() -> str:
    return importlib.metadata.version("mlserver")


def _release(version: str) -> tuple[tuple[int, ...], int]:
    """A sortable form of a version: its release numbers, then 0 for a pre-release (1.8.0rc1 comes
    before 1.8.0) and 1 otherwise."""
    found = re.match(r"\s*v?(\d+(?:\.\d+)*)(.*)", version)
    if found is None:
        raise UnsupportedMLServer(f"cannot read the installed MLServer version {version!r}")
    numbers = tuple(int(n) for n in found.group(1).split("."))
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    pre = re.match(r"[.\-_]?(a|b|c|rc|alpha|beta|pre|preview|dev)", found.group(2).lower())
    return numbers, 0 if pre else 1


def supported(version: str) -> bool:
    return _release(MINIMUM_VERSION) <= _release(version) < (_release(BELOW_VERSION)[0], 0)


def check_version() -> None:
    """Raise :class:`UnsupportedMLServer` unless the installed MLServer is in the pinned range."""
    version = installed_version()
    if not supported(version):
        raise UnsupportedMLServer(
            f"ragraph's nodes support MLServer {SUPPORTED_RANGE}, but mlserver {version} is installed "
            f"(ragraph_serving.mlserver_patch patches that range's servers): "
            f"pip install 'mlserver{SUPPORTED_RANGE}'"
        )


def applied() -> bool:
    import mlserver.grpc.server as grpc_server

    return bool(getattr(grpc_server, _APPLIED, False))


def apply() -> None:
    """Make MLServer's servers ragraph's (see the module docstring); idempotent. Raises
    :class:`UnsupportedMLServer` on an MLServer outside the pinned range, before changing anything."""
    check_version()
    # imported here: MLServer's generated V2 stubs must not load in processes that use ours
    import mlserver.grpc.server as grpc_server
    import mlserver.rest.server as rest_server

    from .access import RestTokenMiddleware
    from .health import HealthReporter
    from .servicer import GuardedRepositoryServicer, RagraphInferenceServicer

    if getattr(grpc_server, _APPLIED, False):
        return
    grpc_server.InferenceServicer = RagraphInferenceServicer  # type: ignore[misc]
    grpc_server.ModelRepositoryServicer = GuardedRepositoryServicer  # type: ignore[misc]

    cls = grpc_server.GRPCServer
    create_server = cls._create_server
    stop = cls.stop

    def _create_server(self: Any) -> Any:
        server = create_server(self)
        reporter = HealthReporter(self._data_plane)
        reporter.add_to_server(server)
        self._ragraph_health = reporter
        try:
            reporter.start()
        except RuntimeError:  # built outside a running loop: nothing to keep current
            log.warning("health: gRPC server built outside an event loop; grpc.health.v1 stays NOT_SERVING")
        return server

    async def _stop(self: Any, sig: int | None = None) -> None:
        reporter = getattr(self, "_ragraph_health", None)
        if reporter is not None:
            await reporter.shutdown()
        await stop(self, sig)

    cls._create_server = _create_server  # type: ignore[method-assign]
    cls.stop = _stop  # type: ignore[method-assign]

    create_app = rest_server.create_app

    def create_guarded_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(RestTokenMiddleware)
        return app

    rest_server.create_app = create_guarded_app
    setattr(grpc_server, _APPLIED, True)


async def hosted_models(owner: Any) -> list[MLModel]:
    """Every model (each loaded version) in the registry of an MLServer or of its data plane,
    ready or still loading: MLServer has no public read of its models."""
    return list(await owner._model_registry.get_models())


async def hosted_model(data_plane: Any, name: str, version: str | None = None) -> MLModel:
    """The data plane's model ``name`` (``version``, else the default one); MLServer's
    ModelNotFound when it has none."""
    model: MLModel = await data_plane._model_registry.get_model(name, version)
    return model


def infer_context(data_plane: Any, name: str, version: str | None) -> AbstractAsyncContextManager[MLModel]:
    """MLServer's own frame of one inference: the ready model, the request metrics
    (duration, failures, successes) and the model's context variables."""
    context: AbstractAsyncContextManager[MLModel] = data_plane._infer_contextmanager(name, version)
    return context


@asynccontextmanager
async def stream_context(data_plane: Any, name: str, version: str | None) -> AsyncIterator[MLModel]:
    """:func:`infer_context` for a stream, without the model's context variables: they would be
    set across the stream's yields, and a client that cancels has the stream closed from another
    context, where resetting them raises. The request metrics are MLServer's."""
    duration = data_plane._ModelInferRequestDuration.labels(model=name, version=version).time()
    failures = data_plane._ModelInferRequestFailure.labels(model=name, version=version).count_exceptions()
    with duration, failures:
        from mlserver.errors import ModelNotReady

        model = await hosted_model(data_plane, name, version)
        if not model.ready:
            raise ModelNotReady(name, version)
        yield model
        data_plane._ModelInferRequestSuccess.labels(model=name, version=version).inc()


def grpc_server_options(settings: Settings) -> dict[str, Any] | None:
    """Extra gRPC server options of MLServer settings (None: MLServer's own)."""
    options: dict[str, Any] | None = settings._custom_grpc_server_settings
    return options


def set_grpc_server_options(settings: Settings, options: dict[str, Any] | None) -> None:
    """MLServer takes extra gRPC server options (e.g. a connection age) only through this private
    field; it logs a warning that they are "out of support" when it builds the server."""
    settings._custom_grpc_server_settings = options


__all__ = [
    "SUPPORTED_RANGE",
    "UnsupportedMLServer",
    "applied",
    "apply",
    "check_version",
    "grpc_server_options",
    "hosted_model",
    "hosted_models",
    "infer_context",
    "installed_version",
    "set_grpc_server_options",
    "stream_context",
    "supported",
]
