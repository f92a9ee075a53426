"""The load test's summary of locust's CSV files and its per-stream measures (no locust needed)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from ragraph_client.tensors import InferResponse, Tensor

from loadtest.measure import IncompleteStream, Settings, load_questions, measure_stream, resource_exhausted
from loadtest.summary import exit_code, parse_duration, read_stats, summarize, table

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
# rows as locust 2.47 writes them (a real run's shape: the metrics share the stream's name)
STREAM = (
    "grpc,rag stream,40,1,2200,2209.6,853.6,3014.8,158.4,1.25,0.031,"
    "2200,2700,2800,2800,2900,2950,3000,3000,3000,3000,3000"
)
TTFT = "ttft,rag stream,36,0,310,398.57,79.6,1393.3,0.0,1.12,0.0,310,380,480,500,790,1400,1400,1400,1400,1400,1400"
RATE = "tokens_per_s,rag stream,36,0,28,31.06,16.5,72.1,0.0,1.12,0.0,28,33,34,37,53,56,72,72,72,72,72"
AGGREGATED = (
    ",Aggregated,112,4,310,879.7,16.5,3014.8,52.8,3.49,0.125,310,1200,2000,2100,2700,2900,2900,3000,3000,3000,3000"
)
LIMITED = "grpc,rag stream RESOURCE_EXHAUSTED,3,3,4,4.2,2.0,9.0,0.0,0.1,0.1,4,4,4,4,9,9,9,9,9,9,9"
FAILURES_HEADER = "Method,Name,Error,Occurrences,First Seen,Last Seen"
EXHAUSTED = (
    "grpc,rag stream RESOURCE_EXHAUSTED,\"ResourceExhausted(RESOURCE_EXHAUSTED: 'rate limit: retry in 0.4 s')\",3,,"
)
UNAVAILABLE = "grpc,rag stream,\"Unavailable(UNAVAILABLE: 'failed to connect')\",1,,"


def write_run(tmp_path: Path, stats: list[str], failures: list[str] = (), exceptions: int = 0) -> Path:
    prefix = tmp_path / "locust"
    Path(f"{prefix}_stats.csv").write_text("\n".join([HEADER, *stats]) + "\n")
    Path(f"{prefix}_failures.csv").write_text("\n".join([FAILURES_HEADER, *failures]) + "\n")
    rows = [f'{exceptions},"boom","Traceback ...",local'] if exceptions else []
    Path(f"{prefix}_exceptions.csv").write_text("\n".join(["Count,Message,Traceback,Nodes", *rows]) + "\n")
    return prefix


def test_summary_reads_the_stream_and_metric_rows_not_aggregated(tmp_path: Path) -> None:
    prefix = write_run(tmp_path, [STREAM, LIMITED, RATE, TTFT, AGGREGATED], [EXHAUSTED, UNAVAILABLE])
    s = summarize(prefix, users=8, duration="60s", llm="tiny")

    assert (s["users"], s["duration"], s["duration_s"], s["llm"]) == (8, "60s", 60.0, "tiny")
    # every call (40 streams + 3 rate-limited), not Aggregated's 112; ok = streams without error
    assert s["requests"] == 43 and s["ok"] == 39
    assert s["rps"] == 1.25  # the streams' (the rate-limited row's percentiles stay out too)
    assert s["latency_ms"] == {"p50": 2200.0, "p95": 2950.0, "mean": 2209.6}
    assert s["ttft_ms"] == {"p50": 310.0, "p95": 1400.0, "mean": 398.6, "samples": 36}
    assert s["tokens_per_s"] == {"mean": 31.1, "p50": 28.0, "samples": 36}
    assert s["errors"] == {"resource_exhausted": 3, "other": 1, "total": 4}
    assert exit_code(s) == 1
    json.dumps(s)  # summary.json must be writable as is


def test_only_resource_exhausted_errors_pass(tmp_path: Path) -> None:
    stream = STREAM.replace("grpc,rag stream,40,1,", "grpc,rag stream,40,0,")
    s = summarize(write_run(tmp_path, [stream, LIMITED, TTFT, RATE], [EXHAUSTED]), users=8, duration="1m")
    assert s["errors"] == {"resource_exhausted": 3, "other": 0, "total": 3}
    assert exit_code(s) == 0


def test_exceptions_in_user_code_count_as_other_errors(tmp_path: Path) -> None:
    stream = STREAM.replace("grpc,rag stream,40,1,", "grpc,rag stream,40,0,")
    s = summarize(write_run(tmp_path, [stream, TTFT, RATE], exceptions=2), users=8, duration="60s")
    assert s["errors"] == {"resource_exhausted": 0, "other": 2, "total": 2}
    assert exit_code(s) == 1


def test_no_completed_request_fails_and_missing_metrics_are_none(tmp_path: Path) -> None:
    empty = "grpc,rag stream,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A"
    prefix = write_run(tmp_path, [empty])
    assert read_stats(Path(f"{prefix}_stats.csv"))[("grpc", "rag stream")].percentile("50%") is None
    s = summarize(prefix, users=1, duration="10s")
    assert s["requests"] == 0 and s["ttft_ms"]["p50"] is None and s["tokens_per_s"]["samples"] == 0
    assert exit_code(s) == 1
    lines = dict(line.split("  ", 1) for line in table(s).splitlines())
    assert lines["TTFT p50 / p95"].strip() == "- / -"


def test_table_shows_the_figures(tmp_path: Path) -> None:
    prefix = write_run(tmp_path, [STREAM, LIMITED, TTFT, RATE], [EXHAUSTED, UNAVAILABLE])
    lines = dict(line.split("  ", 1) for line in table(summarize(prefix, users=8, duration="60s")).splitlines())
    assert lines["requests (ok)"].strip() == "43 (39)"
    assert lines["TTFT p50 / p95"].strip() == "310 ms / 1400 ms"
    assert lines["tokens/s mean / p50"].strip() == "31.1 / 28"
    assert lines["errors RESOURCE_EXHAUSTED"].strip() == "3"
    assert lines["errors other"].strip() == "1"


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("90", 90), ("1m30s", 90), ("2m", 120), ("1h", 3600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")


# --- loadtest/measure.py ----------------------------------------------------------------------


def message(name: str | None, text: str = "", **params: object) -> InferResponse:
    outputs = [] if name is None else [Tensor.from_strings(name, [text])]
    return InferResponse("rag", outputs, dict(params))


def final(**params: object) -> InferResponse:
    outputs = [Tensor.from_strings("label", ["answered"]), Tensor.from_strings("guard", ["benign"])]
    return InferResponse("rag", outputs, {"triton_final_response": True, **params})


class Clock:
    """Hands out the given readings in order (one per message, one at the end)."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def test_measure_stream_ttft_and_rate_after_the_first_token() -> None:
    stream = [message("sources", "[]"), message("answer", "Hel"), message("answer", "lo"), message("answer", "!")]
    # started at 10.0: sources 10.1, deltas 10.25 / 10.30 / 10.45, final 10.5, end 10.5
    clock = Clock(10.1, 10.25, 10.30, 10.45, 10.5, 10.5)
    result = measure_stream([*stream, final(completion_tokens=9)], started=10.0, clock=clock)
    assert result.ttft_ms == pytest.approx(250.0)
    assert result.total_ms == pytest.approx(500.0)
    # 9 tokens by the server's count (deltas were coalesced): 8 after the first, over 0.2 s
    assert result.tokens_per_s == pytest.approx(40.0)
    assert (result.deltas, result.answer_chars, result.completion_tokens) == (3, 6, 9)


def test_measure_stream_without_deltas_has_no_ttft() -> None:
    result = measure_stream([message("sources", "[]"), final(completion_tokens=0)], started=0.0, clock=Clock(1, 2, 3))
    assert result.ttft_ms is None and result.tokens_per_s is None and result.total_ms == 3000.0


def test_measure_stream_without_final_message_is_an_error() -> None:
    with pytest.raises(IncompleteStream):
        measure_stream([message("answer", "x")], started=0.0, clock=Clock(1, 2))


def test_settings_from_env_and_auth_header() -> None:
    assert Settings.from_env({}).headers() == {}
    assert Settings.from_env({}).url == "127.0.0.1:8301"
    s = Settings.from_env(
        {"RAGRAPH_LOADTEST_URL": "10.0.0.5:9000", "RAGRAPH_API_KEY": "k1", "RAGRAPH_LOADTEST_MAX_TOKENS": "16"}
    )
    assert s.url == "10.0.0.5:9000"
    assert s.headers() == {"authorization": "Bearer k1"}
    assert s.parameters() == {"max_tokens": 16}


def test_resource_exhausted_is_told_from_other_errors() -> None:
    from ragraph_client.errors import ResourceExhausted, Unavailable, from_status

    assert resource_exhausted(ResourceExhausted("slow down"))
    assert resource_exhausted(from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit"))
    assert not resource_exhausted(Unavailable("down"))
    assert not resource_exhausted(RuntimeError("bug"))
    assert "RESOURCE_EXHAUSTED" in repr(ResourceExhausted("x"))  # what the summary looks for in failures.csv


def test_questions_from_the_retrieval_bench_and_fallback(tmp_path: Path) -> None:
    questions = load_questions(Settings().questions_file)
    assert len(questions) == 81 and all(q.endswith("?") for q in questions)
    plain = tmp_path / "q.txt"
    plain.write_text("first?\n\nsecond?\n")
    assert load_questions(plain) == ["first?", "second?"]
    assert load_questions(tmp_path / "missing.jsonl")  # the built-in few
