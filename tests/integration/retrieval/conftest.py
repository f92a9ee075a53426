"""Fixtures of the retrieval integration tests: a real PostgreSQL + pgvector for the session."""

from tests.fixtures.postgres_server import postgres_server  # noqa: F401 - a pytest fixture
