"""Prometheus metrics, correct across gunicorn workers through prometheus_client's multiprocess mode.

The launcher sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module; without it
(Flask test client, `flask run`) the ordinary in-process registry is used.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.samples import Sample

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("inference_requests_total", "HTTP requests answered, by endpoint and status",
                   ["endpoint", "status"])
REQUEST_SECONDS = Histogram("inference_request_duration_seconds",
                            "Time in the request handler (parse, queue, inference, encode)",
                            ["endpoint"], buckets=LATENCY_BUCKETS)
QUEUE_SECONDS = Histogram("inference_queue_duration_seconds",
                          "Time waiting for the model lock or the batcher", buckets=LATENCY_BUCKETS)
COMPUTE_SECONDS = Histogram("inference_compute_duration_seconds",
                            "Time in the model forward", buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("inference_batch_rows", "Rows in the forward that served a request",
                       buckets=BATCH_BUCKETS)
# For Triton's statistics extension (GET /v2/models/<name>/stats), summed over workers like the rest.
FORWARDS = Counter("inference_forwards", "Model forwards (a batch of many requests counts once)")
ROWS = Counter("inference_rows", "Rows through the model")
HANDLER_SECONDS = Counter("inference_handler_seconds", "Handler time of inference requests, by outcome",
                          ["outcome"])
LAST_SUCCESS_MS = Gauge("inference_last_success_timestamp_ms", "When the last inference succeeded (ms since epoch)",
                        multiprocess_mode="max")
_SUCCESS_SECONDS, _FAIL_SECONDS = HANDLER_SECONDS.labels("success"), HANDLER_SECONDS.labels("fail")


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The text format for GET /metrics, merged over all live workers in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def snapshot() -> list[Sample]:
    """Every sample now, merged over live workers (one read of the multiprocess files)."""
    return [sample for family in _registry().collect() for sample in family.samples]


def total(samples: list[Sample], name: str, where: Callable[[dict[str, str]], bool] = lambda _labels: True) -> float:
    """One sample (e.g. `inference_rows_total`) summed over the labels `where` accepts (a timestamp: its max)."""
    values = [s.value for s in samples if s.name == name and where(s.labels)]
    if name.endswith("_timestamp_ms"):
        return max(values, default=0.0)
    return sum(values)


_REQUEST_CHILDREN: dict[tuple[str, int], tuple] = {}


def _children(endpoint: str, status: int) -> tuple:
    """The labelled counter and histogram of one (endpoint, status), looked up once per worker."""
    key = (endpoint, status)
    found = _REQUEST_CHILDREN.get(key)
    if found is None:
        found = (REQUESTS.labels(endpoint, str(status)), REQUEST_SECONDS.labels(endpoint))
        _REQUEST_CHILDREN[key] = found
    return found


def forwarded(rows: int) -> None:
    FORWARDS.inc()
    ROWS.inc(rows)


def observe(endpoint: str, status: int, total_s: float, queue_s: float | None = None,
            infer_s: float | None = None, batch_rows: int | None = None) -> None:
    counter, latency = _children(endpoint, status)
    counter.inc()
    latency.observe(total_s)
    if status == 200:
        _SUCCESS_SECONDS.inc(total_s)
        LAST_SUCCESS_MS.set(time.time() * 1e3)
    else:
        _FAIL_SECONDS.inc(total_s)
    if infer_s is not None:
        QUEUE_SECONDS.observe(queue_s or 0.0)
        COMPUTE_SECONDS.observe(infer_s)
    if batch_rows is not None:
        BATCH_ROWS.observe(batch_rows)

# tinylm (--model tinylm): the OpenAI endpoints' token timing, as the harness measures it client-side.
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
GEN_TTFT = Histogram("generation_time_to_first_token_seconds",
                     "From the request's arrival to its first token (queue and prefill)", buckets=TOKEN_BUCKETS)
GEN_ITL = Histogram("generation_inter_token_seconds", "Gap between two tokens of one stream, as handed out",
                    buckets=TOKEN_BUCKETS)
GEN_TOKENS = Counter("generation_tokens", "Tokens read (prompt) and made (completion)", ["kind"])
GEN_BATCH = Histogram("generation_batch_size", "Sequences advanced by one decode step", buckets=BATCH_BUCKETS)
GEN_ACTIVE = Gauge("generation_active_sequences", "Sequences being generated (prefilling or decoding)",
                   multiprocess_mode="livesum")
