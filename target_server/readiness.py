"""Which workers are ready: each writes a marker file after warm-up; the server is ready when all are.

Gunicorn only lets a worker accept connections after its app is loaded, so a single worker is
ready as soon as it answers; the markers let /v2/health/ready speak for the whole server.
"""
from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "TARGET_SERVER_STATE_DIR"


def _ready_dir() -> Path | None:
    state = os.environ.get(STATE_DIR_ENV)
    return Path(state) / "ready" if state else None


def mark_ready(pid: int | None = None) -> None:
    directory = _ready_dir()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / str(pid or os.getpid())).touch()


def mark_gone(pid: int) -> None:
    directory = _ready_dir()
    if directory is not None:
        (directory / str(pid)).unlink(missing_ok=True)


def ready_workers() -> int | None:
    """Live workers that finished warm-up, or None when not running under the launcher."""
    directory = _ready_dir()
    if directory is None:
        return None
    count = 0
    for marker in directory.glob("*") if directory.exists() else ():
        try:
            os.kill(int(marker.name), 0)
            count += 1
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:
            count += 1
    return count
