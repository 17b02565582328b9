"""The one object holding every serving setting, read from CLI flags or TARGET_SERVER_* variables."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

MODEL_NAMES = ("linear", "mlp", "sleep", "noop")
WORKER_CLASSES = ("sync", "gthread")
LOCK_MODES = ("none", "global")
ENV_PREFIX = "TARGET_SERVER_"


class WeightsError(ValueError):
    """A weights file that cannot be used for the chosen model (kept torch-free for the master)."""


def available_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerConfig:
    """Serving settings; `torch_threads=None` means "cores // workers, at least 1"."""

    model: str = "linear"
    workers: int = 1
    worker_class: str = "sync"
    threads: int = 1
    lock: str = "none"
    max_batch: int = 1
    max_wait_ms: float = 2.0
    queue_limit: int = 256
    torch_threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_048_576
    max_rows: int = 1024
    timeout_s: int = 30
    request_timeout_s: float = 10.0
    keepalive_s: int = 5
    backlog: int = 2048
    weights: str | None = None
    sleep_ms: float = 20.0
    auth_token: str | None = field(default=None, repr=False)
    exit_with_parent: bool = False

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    @property
    def resolved_torch_threads(self) -> int:
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, available_cores() // max(1, self.workers))

    def problems(self) -> list[str]:
        """Every inconsistency at once, phrased for the user (empty list = valid)."""
        out: list[str] = []
        if self.model not in MODEL_NAMES:
            out.append(f"model: unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.worker_class not in WORKER_CLASSES:
            out.append(f"worker_class: {self.worker_class!r} is not one of {', '.join(WORKER_CLASSES)}")
        if self.lock not in LOCK_MODES:
            out.append(f"lock: {self.lock!r} is not one of {', '.join(LOCK_MODES)}")
        for name in ("workers", "threads", "max_batch", "queue_limit", "max_body_bytes", "max_rows",
                     "timeout_s", "backlog"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.torch_threads is not None and self.torch_threads < 1:
            out.append(f"torch_threads: must be at least 1, got {self.torch_threads}")
        for name in ("max_wait_ms", "sleep_ms", "request_timeout_s", "keepalive_s"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must not be negative, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            out.append(f"port: {self.port} is outside 0-65535")
        if self.worker_class == "sync" and self.threads > 1:
            out.append("threads: sync workers serve one request at a time; "
                       "use worker_class gthread for threads > 1")
        if self.batching and (self.worker_class != "gthread" or self.threads < 2):
            out.append("max_batch: dynamic batching needs concurrent requests in a worker; "
                       "use worker_class gthread with threads >= 2")
        if self.batching and self.lock == "global":
            out.append("lock: the batcher already serialises forwards; use lock none with max_batch > 1")
        return out

    def describe(self) -> str:
        """One line for logs and report labels."""
        parts = [f"model={self.model}", f"workers={self.workers}", f"class={self.worker_class}",
                 f"threads={self.threads}", f"lock={self.lock}",
                 f"torch_threads={self.resolved_torch_threads}"]
        if self.batching:
            parts.append(f"max_batch={self.max_batch} max_wait_ms={self.max_wait_ms:g}")
        if self.model == "sleep":
            parts.append(f"sleep_ms={self.sleep_ms:g}")
        return " ".join(parts)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "ServerConfig":
        """Build from a dict, refusing names that are not settings (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown server setting(s): {', '.join(unknown)}")
        return cls(**values)


def env_defaults(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings given as TARGET_SERVER_<NAME> environment variables, converted to field types."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ServerConfig):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        out[f.name] = _convert(f.name, raw)
    return out


def _convert(name: str, raw: str) -> Any:
    default = next(f.default for f in dataclasses.fields(ServerConfig) if f.name == name)
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "torch_threads":
        return int(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
