"""The model repository switch outside ragraph's launcher: plain ``mlserver start`` (Seldon Core 2)
turns load/unload on with the services' variables, and nothing else does."""

from __future__ import annotations

import pytest
from ragraph_serving import access


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"RAGRAPH_LLM_MODEL_REPOSITORY_API": "true"}, True),
        ({"RAGRAPH_ENCODER_MODEL_REPOSITORY_API": " 1 "}, True),
        ({"RAGRAPH_LLM_MODEL_REPOSITORY_API": "false"}, False),
        ({"RAGRAPH_LLM_MODEL_REPOSITORY_API": "no"}, False),
        ({"RAGRAPH_ROUTER_MODEL_REPOSITORY_API": "true"}, False),
        ({"RAGRAPH_MODEL_REPOSITORY_API": "true"}, False),
    ],
)
def test_the_services_variables_turn_it_on(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool) -> None:
    for service in ("ENCODER", "LLM"):
        monkeypatch.delenv(f"RAGRAPH_{service}_MODEL_REPOSITORY_API", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert access._repository_api_from_environment() is enabled


def test_the_refusal_names_the_setting_that_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "_repository_api", True)
    monkeypatch.setattr(access, "_repository_setting", access._repository_setting)
    access.set_repository_api(False, "RAGRAPH_LLM_MODEL_REPOSITORY_API")
    assert access.repository_api_enabled() is False
    assert access.repository_api_off_message() == (
        "model load/unload is turned off on this server (set RAGRAPH_LLM_MODEL_REPOSITORY_API=true to allow it)"
    )
