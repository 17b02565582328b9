"""One row per request, streamed to disk as it completes (readers live in harness.analysis.stats).

Rows are appended to a lock-free deque by request threads and written by one thread every
~200 ms as whole lines in a single write() each, so a crash or Ctrl-C loses at most the last
fraction of a second and never leaves a torn line behind a complete one. Each generator process
writes its own `samples-<gen>.csv`; readers concatenate them (optionally gzip-compressed).
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from harness.engines.http_client import parse_server_timing

COLUMNS = ["intended", "start", "end", "status", "error", "bytes", "stage", "gen", "srv_queue_ms",
           "srv_infer_ms", "srv_total_ms"]
HEADER = ",".join(COLUMNS) + "\n"
NOT_SENT = "not_sent"
HTTP_ERROR = "http"
FLUSH_CHUNK = 256  # rows formatted per write()

# (intended, start|None, end|None, status, error, bytes, stage, gen, srv_queue_ms|None, srv_infer_ms|None,
#  srv_total_ms|None). A request thread may leave the raw Server-Timing header value (bytes) in
# place of srv_queue_ms, the other two None: it is parsed here, by the writer thread, off the
# request path.
Row = tuple[float, float | None, float | None, int, str, int, int, int, Any, float | None, float | None]


_PLAIN = "%.6f,%.6f,%.6f,%d,%s,%d,%d,%d,,,\n"  # a sent request without Server-Timing (the common row)


def format_row(row: Row) -> str:
    intended, start, end, status, error, size, stage, gen, q, inf, total = row
    if start is None:  # a request that was planned but never sent
        return f"{intended:.6f},,,0,{error},0,{stage},{gen},,,\n"
    if q is None and inf is None:
        return _PLAIN % (intended, start, end, status, error, size, stage, gen)
    if isinstance(q, bytes):
        parsed = parse_server_timing(q)
        if parsed is None:
            return _PLAIN % (intended, start, end, status, error, size, stage, gen)
        q, inf, total = parsed
    return (f"{intended:.6f},{start:.6f},{end:.6f},{status},{error},{size},{stage},{gen},"
            f"{_ms(q)},{_ms(inf)},{_ms(total)}\n")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


class SampleWriter:
    """Thread-safe append; a background thread flushes complete lines to disk."""

    def __init__(self, path: Path, flush_interval: float = 0.2) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, HEADER.encode())
        self._rows: deque[Row] = deque()
        # append(row) is deque.append itself: atomic, and no Python frame on the request path
        self.append = self._rows.append
        self._interval = flush_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-writer", daemon=True)
        self._thread.start()
        self.written = 0
        self.unwritable = 0

    def append(self, row: Row) -> None:  # replaced per instance by deque.append (see __init__)
        self._rows.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write every queued row, FLUSH_CHUNK lines per write(): each write releases the GIL, so
        request threads waiting for it are not held up by a long batch. A row that cannot be
        formatted (a bug) is reported and skipped; it never costs the rows around it."""
        rows = self._rows
        while rows:
            lines = []
            while rows and len(lines) < FLUSH_CHUNK:
                row = rows.popleft()
                try:
                    lines.append(format_row(row))
                except (TypeError, ValueError):
                    self._report_bad_row(row)
            os.write(self._fd, "".join(lines).encode())
            self.written += len(lines)

    def _report_bad_row(self, row: Any) -> None:
        self.unwritable += 1
        if self.unwritable == 1:
            print(f"sample writer for {self.path}: cannot write row {row!r}:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()
        os.close(self._fd)
