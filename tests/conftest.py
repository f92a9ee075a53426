from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.fixtures.corpus import ingest_corpus  # noqa: E402
from tests.fixtures.servers import Service, start_llm, start_service  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama with a locally trained tokenizer and a chat template, written
    with save_pretrained (users' from_pretrained path loads it)."""
    from tests.fixtures.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-llama", kind="tiny")


@pytest.fixture(scope="session")
def llm_service(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Service]:
    """``ragraph serve llm`` on the tiny model, shared by the session."""
    service = start_llm(tmp_path_factory.mktemp("llm"), tiny_llm_dir, "--max-batch-size", "8", "--max-queued", "16")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory, encoder_service: Service) -> str:
    """A local store holding part of bench/retrieval's corpus (ops docs + one off-topic document),
    ingested through the real encoder service; shared by the session, read-only for tests."""
    root = tmp_path_factory.mktemp("graph")
    return ingest_corpus(root, encoder_service.grpc_url, ["ops", "espresso-machine-care.md"])
