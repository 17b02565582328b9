"""The one object holding every serving setting, read from CLI flags or TARGET_SERVER_* variables."""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODEL_NAMES = ("linear", "mlp", "sleep", "noop", "tinylm")
GENERATIVE = "tinylm"  # served on the OpenAI endpoints, not /predict
WORKER_CLASSES = ("sync", "gthread")
LOCK_MODES = ("none", "global")
FRAMEWORKS = ("flask", "fastapi")
ENV_PREFIX = "TARGET_SERVER_"


class WeightsError(ValueError):
    """A weights file that cannot be used for the chosen model (kept torch-free for the master)."""


def available_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def knob(default: Any, help: str, *, choices: tuple[str, ...] | None = None, minimum: float | None = None,
         scenario: bool = True) -> Any:
    """A serving setting: its default, help text, allowed values and whether scenarios may set it.

    This metadata is the one source for the server's flags and TARGET_SERVER_* variables
    (target_server.cli), the harness's `target.server` scenario schema and the command line
    the harness starts the server with (`ServerConfig.to_argv`). Adding a knob means adding a
    field here (plus its test and docs)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "scenario": scenario})


@dataclass(frozen=True)
class Knob:
    """One serving setting as described by its `knob(...)` field."""

    name: str
    type: Any  # int, float, str or bool; `optional` says whether None is allowed
    optional: bool
    default: Any
    help: str
    choices: tuple[str, ...] | None
    minimum: float | None
    scenario: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ServerConfig:
    """Serving settings; `torch_threads=None` means "cores // workers, at least 1"."""

    model: str = knob("linear", "model to serve", choices=MODEL_NAMES)
    framework: str = knob("flask", "web layer: flask (WSGI under gunicorn's sync or gthread workers) or fastapi "
                                   "(ASGI under gunicorn's uvicorn workers; worker_class does not apply)",
                          choices=FRAMEWORKS)
    workers: int = knob(1, "gunicorn worker processes", minimum=1)
    worker_class: str = knob("sync", "sync: one request per worker, connection closed after each; "
                                     "gthread: threads + keep-alive", choices=WORKER_CLASSES)
    threads: int = knob(1, "threads per worker (gthread; fastapi: threads running forwards)", minimum=1)
    lock: str = knob("none", "global: the article's threading.Lock around every forward "
                         "(tinylm: around each whole generation)", choices=LOCK_MODES)
    max_batch: int = knob(1, "dynamic batching: rows per forward (1 = off; needs gthread); tinylm: sequences "
                             "advanced together by each decode step (continuous batching)", minimum=1)
    max_wait_ms: float = knob(2.0, "longest wait for batch-mates that are already arriving", minimum=0)
    queue_limit: int = knob(256, "requests waiting in a worker's batcher before 503", minimum=1)
    torch_threads: int | None = knob(None, "torch intra-op threads per worker (default: cores // workers)",
                                     minimum=1)
    host: str = knob("127.0.0.1", "address to listen on", scenario=False)
    port: int = knob(8000, "port (0 = any free port)", scenario=False)
    max_body_bytes: int = knob(1_048_576, "larger bodies get 413", minimum=1)
    max_rows: int = knob(1024, "rows per request", minimum=1)
    timeout_s: int = knob(30, "gunicorn worker timeout", minimum=1)
    request_timeout_s: float = knob(10.0, "longest wait in the batch queue before 503", minimum=0)
    keepalive_s: int = knob(5, "idle keep-alive (gthread)", minimum=0)
    backlog: int = knob(2048, "listen backlog", minimum=1, scenario=False)
    prefill_chunk: int = knob(64, "tinylm: prompt tokens prefilled per step, so a long prompt stalls running "
                                  "streams for one chunk's time only", minimum=1)
    weights: str | None = knob(None, "state_dict or bundle file (linear, mlp)")
    sleep_ms: float = knob(20.0, "forward time of the sleep model", minimum=0)
    device: str = knob("auto", "where the model runs: cpu, cuda, or auto (cuda when available); loaded in each "
                               "worker after the fork", choices=("auto", "cpu", "cuda"))
    auth_token: str | None = field(default=None, repr=False, metadata={
        "help": "require 'Authorization: Bearer TOKEN'", "choices": None, "minimum": None, "scenario": True})
    tls: bool = knob(False, "serve HTTPS: with certfile/keyfile, or a self-signed certificate for 127.0.0.1 "
                            "and localhost made at start (removed at exit)")
    certfile: str | None = knob(None, "PEM certificate (chain) for tls")
    keyfile: str | None = knob(None, "PEM private key of certfile")
    access_log: bool = knob(False, "one line per request on stderr: client, request, status, bytes, "
                                   "milliseconds and the X-Request-ID header")
    leak_kb_per_request: float = knob(0.0, "a deliberate leak to try soak verdicts on: every answered inference "
                                           "request keeps this many KiB for the worker's life (0 = off)", minimum=0)
    exit_with_parent: bool = knob(False, "stop when the process that started the server dies", scenario=False)

    @classmethod
    def knobs(cls) -> list[Knob]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = type(None) in typing.get_args(hint)
            out.append(Knob(f.name, args[0] if optional else hint, optional, f.default, f.metadata["help"],
                            f.metadata["choices"], f.metadata["minimum"], f.metadata["scenario"]))
        return out

    def to_argv(self) -> list[str]:
        """The flags that start a server with exactly these settings (secrets excepted: the
        auth token travels in the environment, never on a command line others can read)."""
        argv: list[str] = []
        for k in self.knobs():
            value = getattr(self, k.name)
            if k.name == "auth_token" or value is None:
                continue
            if k.type is bool:
                argv += [k.flag] if value else []
            else:
                argv += [k.flag, str(value)]
        return argv

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
        for k in self.knobs():
            if k.choices and getattr(self, k.name) not in k.choices:
                out.append(f"{k.name}: unknown {k.name.replace('_', ' ')} {getattr(self, k.name)!r}; "
                           f"choose one of {', '.join(k.choices)}")
        for k in self.knobs():
            value = getattr(self, k.name)
            if k.minimum is not None and value is not None and value < k.minimum:
                rule = "must not be negative" if k.minimum == 0 else f"must be at least {k.minimum:g}"
                out.append(f"{k.name}: {rule}, got {value}")
        if not 0 <= self.port <= 65535:
            out.append(f"port: {self.port} is outside 0-65535")
        if (self.certfile or self.keyfile) and not self.tls:
            out.append("certfile: a certificate or key needs tls: true")
        if bool(self.certfile) != bool(self.keyfile):
            out.append("keyfile: give certfile and keyfile together (or neither, for a self-signed certificate)")
        if self.batching and self.lock == "global":
            out.append("lock: the batcher already serialises forwards; use lock none with max_batch > 1")
        if self.model == GENERATIVE:
            out += self._generative_problems()
            if self.device == "cuda":
                out.append("device: tinylm runs on the CPU; use device cpu or auto")
        if self.framework == "fastapi":
            return out  # one event loop per worker: the WSGI worker rules below do not apply
        if self.worker_class == "sync" and self.threads > 1:
            out.append("threads: sync workers serve one request at a time; "
                       "use worker_class gthread for threads > 1")
        if self.batching and (self.worker_class != "gthread" or self.threads < 2):
            out.append("max_batch: dynamic batching needs concurrent requests in a worker; "
                       "use worker_class gthread with threads >= 2")
        return out

    def _generative_problems(self) -> list[str]:
        out = []
        if self.framework != "flask":
            out.append("framework: tinylm is served by the flask web layer only")
        if self.weights:
            out.append("weights: tinylm's weights are seeded at start; it loads no file")
        if self.batching and self.threads < self.max_batch:
            out.append(f"threads: each tinylm stream holds a thread; use threads >= max_batch ({self.max_batch}) "
                       "so the batch can fill")
        return out

    def describe(self) -> str:
        """One line for logs and report labels."""
        web = f"class={self.worker_class}" if self.framework == "flask" else "framework=fastapi"
        parts = [f"model={self.model}", f"workers={self.workers}", web,
                 f"threads={self.threads}", f"lock={self.lock}",
                 f"torch_threads={self.resolved_torch_threads}"]
        if self.batching:
            parts.append(f"max_batch={self.max_batch} max_wait_ms={self.max_wait_ms:g}")
        if self.model == GENERATIVE:
            parts.append(f"prefill_chunk={self.prefill_chunk}")
        if self.model == "sleep":
            parts.append(f"sleep_ms={self.sleep_ms:g}")
        if self.device != "auto":
            parts.append(f"device={self.device}")
        if self.tls:
            parts.append("tls")
        return " ".join(parts)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServerConfig:
        """Build from a dict, refusing names that are not settings (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown server setting(s): {', '.join(unknown)}")
        return cls(**values)


def env_defaults(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings given as TARGET_SERVER_<NAME> environment variables, converted to the knobs' types."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for k in ServerConfig.knobs():
        raw = source.get(ENV_PREFIX + k.name.upper())
        if raw is not None:
            out[k.name] = _convert(k, raw)
    return out


def _convert(k: Knob, raw: str) -> Any:
    if k.type is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return k.type(raw)
