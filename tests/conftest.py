from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.fixtures.servers import Service, start_service  # noqa: E402


@pytest.fixture(scope="session")
def encoder_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real encoder service (all-MiniLM-L6-v2) as a subprocess, shared by the session."""
    log = tmp_path_factory.mktemp("encoder") / "encoder.log"
    service = start_service(["encoder"], log, ["encoder", "classifier"])
    yield service
    service.stop()


@pytest.fixture()
def encoder_client(encoder_service: Service) -> Iterator[object]:
    from ragraph_client.client import InferenceClient

    with InferenceClient(encoder_service.grpc_url, timeout=30.0) as client:
        yield client
