"""The target's Prometheus `/metrics` over a run: the scraper thread writing metrics.csv, and its readers."""
from __future__ import annotations

import csv
import http.client
import io
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from harness.results import metrics

MAX_MISSES = 5  # consecutive network failures after a first success before giving up


def format_labels(labels: dict[str, str]) -> str:
    """Prometheus style, keys sorted: `endpoint="/predict",status="200"`."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_exposition(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) for every sample of a /metrics page except `_created` timestamps."""
    return [(s.name, format_labels(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")]


class MetricsScraper:
    """Background thread: GET /metrics about once a second, append its samples to metrics.csv.

    The file is created at the first good scrape, so a target without /metrics leaves none. A
    non-200 answer, an unparsable page, a network error before any success, or MAX_MISSES network
    errors in a row stop the scraper for the rest of the run with one line logged.
    """

    def __init__(self, url: str, path: Path, t0: float, *, headers: dict[str, str] | None = None,
                 log: Callable[[str], None] = print, interval: float = 1.0, timeout: float = 2.0,
                 context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.context = context if parts.scheme == "https" else None  # https: how to check the server
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or (443 if self.context else 80)
        self.target = parts.path or "/metrics"
        self.url, self.path, self.t0 = url, path, t0
        self.headers = dict(headers or {})
        self.log, self.interval, self.timeout = log, interval, timeout
        self.scrapes = 0
        self._file: io.TextIOWrapper | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 2)
        if self._file is not None:
            self._file.close()

    def _fetch(self) -> tuple[float, str]:
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
                if self.context is not None else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout))
        try:
            sent = time.monotonic()
            conn.request("GET", self.target, headers=self.headers)
            response = conn.getresponse()
            body = response.read()
            t = (sent + time.monotonic()) / 2.0 - self.t0
        finally:
            conn.close()
        if response.status != 200:
            raise LookupError(f"HTTP {response.status}")
        return t, body.decode("utf-8", errors="replace")

    def _run(self) -> None:
        misses = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                t, text = self._fetch()
                rows = parse_exposition(text)
                if not rows:
                    raise ValueError("a page without samples")
            except (OSError, http.client.HTTPException) as exc:
                misses += 1
                if self.scrapes == 0 or misses >= MAX_MISSES:
                    self.log(f"metrics: no Prometheus metrics from {self.url} ({exc or type(exc).__name__}); "
                             "not scraping them in this run")
                    return
            except (LookupError, ValueError) as exc:
                self.log(f"metrics: {self.url} gave no Prometheus metrics ({exc or 'not the text format'}); "
                         "not scraping them in this run")
                return
            else:
                misses = 0
                self._write(t, rows)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _write(self, t: float, rows: list[tuple[str, str, float]]) -> None:
        if self._file is None:
            self._file = open(self.path, "w", newline="", buffering=1)
            self._file.write(metrics.HEADER)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows((f"{t:.3f}", name, labels, repr(value)) for name, labels, value in rows)
        self._file.write(buffer.getvalue())
        self._file.flush()
        self.scrapes += 1
