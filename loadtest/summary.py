"""The load test's summary from locust's CSV files (``--csv PREFIX``: ``PREFIX_stats.csv``,
``PREFIX_failures.csv``, ``PREFIX_exceptions.csv``), as a dict, a text table and ``summary.json``.

    python -m loadtest.summary loadtest/out/locust --users 8 --duration 60s [--json loadtest/out/summary.json]

Reads the entries the locustfile fires (type ``grpc`` / ``ttft`` / ``tokens_per_s``, name
``rag stream``; type ``grpc``, name ``rag stream RESOURCE_EXHAUSTED`` for rate-limited calls).
``requests`` counts every call, ``ok`` the completed streams; RPS and the latency percentiles are
the streams' (rate-limited calls, refused at once, are left out of them). Locust keeps response
times in buckets (exact below 100, then two significant digits: 147 -> 150, 3432 -> 3400) and
writes percentiles as integers; means are exact. Errors are split by status code:
RESOURCE_EXHAUSTED (a rate limit: an expected answer under load beyond the configured limits)
against everything else, including the exceptions locust caught in user code. :func:`exit_code`
is 1 when there are "other" errors or no stream completed. No locust import (the unit tests run
without locust installed).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import LIMITED_NAME, STREAM_NAME

STREAM = ("grpc", STREAM_NAME)
LIMITED = ("grpc", LIMITED_NAME)
TTFT = ("ttft", STREAM_NAME)
TOKENS_PER_S = ("tokens_per_s", STREAM_NAME)
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


@dataclass
class Entry:
    """One row of ``*_stats.csv``."""

    type: str
    name: str
    count: int
    failures: int
    average: float | None
    median: float | None
    min: float | None
    max: float | None
    rps: float
    percentiles: dict[str, float | None] = field(default_factory=dict)

    def percentile(self, label: str) -> float | None:
        return self.percentiles.get(label)


def _number(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    return float(text)


def read_stats(path: Path) -> dict[tuple[str, str], Entry]:
    """Rows of ``*_stats.csv`` by (type, name); locust's ``Aggregated`` row is left out."""
    entries: dict[tuple[str, str], Entry] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated" and not row["Type"]:
                continue
            count = int(row["Request Count"])
            entries[(row["Type"], row["Name"])] = Entry(
                type=row["Type"],
                name=row["Name"],
                count=count,
                failures=int(row["Failure Count"]),
                average=_number(row["Average Response Time"]) if count else None,
                median=_number(row["Median Response Time"]) if count else None,
                min=_number(row["Min Response Time"]) if count else None,
                max=_number(row["Max Response Time"]) if count else None,
                rps=_number(row["Requests/s"]) or 0.0,
                percentiles={k: _number(v) for k, v in row.items() if k.endswith("%")},
            )
    return entries


def read_failures(path: Path) -> list[tuple[str, str, str, int]]:
    """(method, name, error, occurrences) per row of ``*_failures.csv``; none when it is missing."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["Method"], r["Name"], r["Error"], int(r["Occurrences"])) for r in csv.DictReader(f)]


def read_exception_count(path: Path) -> int:
    """How many exceptions locust caught in user code (``*_exceptions.csv``)."""
    if not path.is_file():
        return 0
    with open(path, newline="", encoding="utf-8") as f:
        return sum(int(r["Count"]) for r in csv.DictReader(f))


def parse_duration(text: str) -> float:
    """Locust's run time syntax (``90``, ``60s``, ``1m30s``, ``1h``) in seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 60s, 1m30s)")
    hours, minutes, seconds = (int(g or 0) for g in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def summarize(prefix: str | Path, users: int, duration: str, **extra: Any) -> dict[str, Any]:
    """The summary of one run from the CSV files at ``prefix``; ``extra`` keys are kept as they are."""
    prefix = str(prefix)
    stats = read_stats(Path(prefix + "_stats.csv"))
    stream = stats.get(STREAM)
    limited = stats.get(LIMITED)
    ttft = stats.get(TTFT)
    rate = stats.get(TOKENS_PER_S)
    failures = read_failures(Path(prefix + "_failures.csv"))
    exhausted = sum(n for _, _, error, n in failures if RESOURCE_EXHAUSTED in error)
    exhausted = max(exhausted, limited.failures if limited else 0)  # failures.csv may be missing
    failed = sum(e.failures for e in stats.values())
    exceptions = read_exception_count(Path(prefix + "_exceptions.csv"))
    requests = (stream.count if stream else 0) + (limited.count if limited else 0)
    return {
        "users": users,
        "duration": duration,
        "duration_s": parse_duration(duration),
        "requests": requests,
        "ok": (stream.count - stream.failures) if stream else 0,
        "rps": _round(stream.rps if stream else 0.0, 2),
        "latency_ms": {
            "p50": stream.percentile("50%") if stream else None,
            "p95": stream.percentile("95%") if stream else None,
            "mean": _round(stream.average if stream else None),
        },
        "ttft_ms": {
            "p50": ttft.percentile("50%") if ttft else None,
            "p95": ttft.percentile("95%") if ttft else None,
            "mean": _round(ttft.average if ttft else None),
            "samples": ttft.count if ttft else 0,
        },
        "tokens_per_s": {
            "mean": _round(rate.average if rate else None),
            "p50": rate.percentile("50%") if rate else None,
            "samples": rate.count if rate else 0,
        },
        "errors": {
            "resource_exhausted": exhausted,
            "other": failed - exhausted + exceptions,
            "total": failed + exceptions,
        },
        **extra,
    }


def exit_code(summary: dict[str, Any]) -> int:
    """0 when requests completed and every error was a clean RESOURCE_EXHAUSTED; else 1."""
    if summary["errors"]["other"] or not summary["ok"]:
        return 1
    return 0


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"
    return f"{value}{unit}"


def table(summary: dict[str, Any]) -> str:
    """The short text table ``make loadtest`` prints."""
    s = summary
    rows = [
        ("users", _fmt(s["users"])),
        ("duration", f"{s['duration']}"),
        ("requests (ok)", f"{s['requests']} ({s['ok']})"),
        ("RPS", _fmt(s["rps"])),
        ("latency p50 / p95", f"{_fmt(s['latency_ms']['p50'], ' ms')} / {_fmt(s['latency_ms']['p95'], ' ms')}"),
        ("TTFT p50 / p95", f"{_fmt(s['ttft_ms']['p50'], ' ms')} / {_fmt(s['ttft_ms']['p95'], ' ms')}"),
        ("tokens/s mean / p50", f"{_fmt(s['tokens_per_s']['mean'])} / {_fmt(s['tokens_per_s']['p50'])}"),
        ("errors RESOURCE_EXHAUSTED", _fmt(s["errors"]["resource_exhausted"])),
        ("errors other", _fmt(s["errors"]["other"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", help="locust's --csv prefix, e.g. loadtest/out/locust")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--duration", required=True)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    summary = summarize(args.prefix, args.users, args.duration)
    print(table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
