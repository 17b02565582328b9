"""Prometheus metrics, correct across gunicorn workers through prometheus_client's multiprocess mode.

The launcher sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module; without it
(Flask test client, `flask run`) the ordinary in-process registry is used.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

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


def exposition() -> tuple[bytes, str]:
    """The text format for GET /metrics, merged over all live workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_REQUEST_CHILDREN: dict[tuple[str, int], tuple] = {}


def _children(endpoint: str, status: int) -> tuple:
    """The labelled counter and histogram of one (endpoint, status), looked up once per worker."""
    key = (endpoint, status)
    found = _REQUEST_CHILDREN.get(key)
    if found is None:
        found = (REQUESTS.labels(endpoint, str(status)), REQUEST_SECONDS.labels(endpoint))
        _REQUEST_CHILDREN[key] = found
    return found


def observe(endpoint: str, status: int, total_s: float, queue_s: float | None = None,
            infer_s: float | None = None, batch_rows: int | None = None) -> None:
    counter, latency = _children(endpoint, status)
    counter.inc()
    latency.observe(total_s)
    if infer_s is not None:
        QUEUE_SECONDS.observe(queue_s or 0.0)
        COMPUTE_SECONDS.observe(infer_s)
    if batch_rows is not None:
        BATCH_ROWS.observe(batch_rows)
