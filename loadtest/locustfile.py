"""Locust load test of the router's ``rag`` model over gRPC (ModelStreamInfer, Triton style).

    RAGRAPH_LOADTEST_URL=127.0.0.1:8301 locust -f loadtest/locustfile.py --headless -u 8 -r 2 -t 60s --csv out/locust

(``make loadtest`` starts the stack and runs this for you.) Each user holds one gRPC channel and asks
questions back to back (``RAGRAPH_LOADTEST_WAIT`` seconds apart, default 0), drawn at random from
``bench/retrieval/questions.jsonl``. Per stream it fires three locust request events, so that all
three land in ``--csv``'s ``*_stats.csv`` with locust's percentiles (TTFT and tokens/s too: no CSV of
our own, locust aggregates them):

- type ``grpc``, name ``rag stream``: the whole stream, request sent -> stream closed (ms); a failed
  call is fired with its exception. A call refused with RESOURCE_EXHAUSTED (a rate limit) is fired
  under a name of its own, ``rag stream RESOURCE_EXHAUSTED``: counted apart from the other errors,
  and its instant rejections do not drag down the streams' latency percentiles;
- type ``ttft``: ms from request sent to the first ``answer`` delta, measured here;
- type ``tokens_per_s``: tokens/s of the stream after its first token (see loadtest/measure.py),
  in the "response time" columns.

The ``ttft`` and ``tokens_per_s`` entries are metrics, not requests: read the ``grpc`` row for
request counts and RPS, not locust's ``Aggregated`` row (which adds them up).

Settings (environment): ``RAGRAPH_LOADTEST_URL`` (router host:port, default 127.0.0.1:8301),
``RAGRAPH_API_KEY`` (sent as ``authorization: Bearer <key>`` when set),
``RAGRAPH_LOADTEST_MAX_TOKENS`` (default 48), ``RAGRAPH_LOADTEST_TEMPERATURE`` (default: the
LLM's), ``RAGRAPH_LOADTEST_TIMEOUT`` (seconds per request, default 120), ``RAGRAPH_LOADTEST_WAIT``,
``RAGRAPH_LOADTEST_QUESTIONS`` (a JSONL or text file of questions), ``RAGRAPH_LOADTEST_BACKOFF``
(seconds a user pauses after a RESOURCE_EXHAUSTED, default 1).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, stats, task
from locust.env import Environment

# locust has monkey-patched the standard library (gevent) before it imported this file; gRPC must be
# told before any channel exists, or a blocking stream read would stall every other user.
grpc_gevent.init_gevent()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragraph_client.client import InferenceClient  # noqa: E402

from loadtest.measure import (  # noqa: E402
    LIMITED_NAME,
    MODEL,
    STREAM_NAME,
    Settings,
    load_questions,
    measure_stream,
    resource_exhausted,
)

SETTINGS = Settings.from_env()
QUESTIONS = load_questions(SETTINGS.questions_file)


@events.quitting.add_listener
def _final_csv(environment: Environment, **kwargs: Any) -> None:
    """Let ``--csv``'s writer take one more pass before locust closes the files. It rewrites them
    every CSV_STATS_INTERVAL_SEC and is not stopped with the users, but locust closes the files
    right after this event without a last write: the streams that finished after the run time
    (``--stop-timeout``) would be missing from ``*_stats.csv`` (seen: 12 there, 16 in the summary)."""
    options = environment.parsed_options
    if options is not None and getattr(options, "csv_prefix", None):
        gevent.sleep(stats.CSV_STATS_INTERVAL_SEC + 0.5)


class RagStreamUser(User):
    """One client of the router: its own channel, one question at a time."""

    wait_time = constant(SETTINGS.wait_s)

    def on_start(self) -> None:
        self.client = InferenceClient(SETTINGS.url, timeout=SETTINGS.timeout_s, headers=SETTINGS.headers())

    def on_stop(self) -> None:
        self.client.close()

    def _fire(
        self, kind: str, value: float, length: int = 0, exception: BaseException | None = None, name: str = STREAM_NAME
    ) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=value,
            response_length=length,
            exception=exception,
            context={},
        )

    @task
    def ask(self) -> None:
        question = random.choice(QUESTIONS)
        started = time.perf_counter()
        try:
            stream: Any = self.client.stream(MODEL, {"question": [question]}, SETTINGS.parameters(), style="triton")
            result = measure_stream(stream, started)
        except Exception as exc:  # noqa: BLE001 - every failure is a failed request to locust
            elapsed = (time.perf_counter() - started) * 1e3
            if resource_exhausted(exc):
                self._fire("grpc", elapsed, exception=exc, name=LIMITED_NAME)
                time.sleep(SETTINGS.backoff_s)  # gevent's sleep (patched): this user only
            else:
                self._fire("grpc", elapsed, exception=exc)
            return
        self._fire("grpc", result.total_ms, result.answer_chars)
        if result.ttft_ms is not None:
            self._fire("ttft", result.ttft_ms)
        if result.tokens_per_s is not None:
            self._fire("tokens_per_s", result.tokens_per_s)
