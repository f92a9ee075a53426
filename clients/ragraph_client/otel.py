"""Reading the standard ``OTEL_*`` variables the same way in every ragraph service: tracing is
on only when one of them asks for an exporter, so an unconfigured deployment creates no spans."""

from __future__ import annotations

import os
from collections.abc import Mapping


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(otlp_endpoint(env))


def otlp_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP traces endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else the general one)."""
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
