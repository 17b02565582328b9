"""Scenario files: the YAML schema, its validation, and errors that name the exact location.

Every problem is reported at once as `location: message` (e.g. `load.stages[2].duration: duration
must not be negative`), with a "did you mean" hint for misspelt keys.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.scenario import messages as schema_errors
from harness.scenario.units import parse_duration
from harness.errors import UserError
from harness.scenario.overrides import apply_override
from harness.scenario.thresholds import Threshold, parse_threshold
from target_server.config import LOCK_MODES, MODEL_NAMES, WORKER_CLASSES, ServerConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Duration(float):
    """Seconds, parsed from 10s / 2m / 500ms / plain numbers."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(lambda v: parse_duration(v))


class ServerSettings(Strict):
    """Settings of the bundled server (see `python -m target_server --help`)."""

    model: Literal[MODEL_NAMES] = "linear"  # type: ignore[valid-type]
    workers: int = Field(1, ge=1)
    worker_class: Literal[WORKER_CLASSES] = "sync"  # type: ignore[valid-type]
    threads: int = Field(1, ge=1)
    lock: Literal[LOCK_MODES] = "none"  # type: ignore[valid-type]
    max_batch: int = Field(1, ge=1)
    max_wait_ms: float = Field(2.0, ge=0)
    queue_limit: int = Field(256, ge=1)
    torch_threads: int | None = Field(None, ge=1)
    sleep_ms: float = Field(20.0, ge=0)
    weights: str | None = None
    max_rows: int = Field(1024, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1)
    timeout_s: int = Field(30, ge=1)
    request_timeout_s: float = Field(10.0, ge=0)
    keepalive_s: int = Field(5, ge=0)
    auth_token: str | None = None

    @model_validator(mode="after")
    def consistent(self) -> "ServerSettings":
        problems = self.to_config().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_config(self, **overrides: Any) -> ServerConfig:
        return ServerConfig.from_mapping({**self.model_dump(), **overrides})


class Generate(Strict):
    """Random (seeded) input rows of a given shape, for /predict or KServe v2 bodies."""

    shape: list[int] = Field(min_length=2, max_length=2)
    format: Literal["predict", "v2"] = "predict"
    input_name: str = "input-0"
    low: float = -1.0
    high: float = 1.0
    seed: int = 0
    variants: int = Field(16, ge=1, le=4096)

    @field_validator("shape")
    @classmethod
    def positive(cls, shape: list[int]) -> list[int]:
        if any(d < 1 for d in shape):
            raise ValueError(f"every dimension must be at least 1, got {shape}")
        return shape


class Target(Strict):
    server: ServerSettings | None = None
    url: str | None = None
    endpoint: str = "/predict"
    method: Literal["POST", "GET"] = "POST"
    payload: Any = None
    payload_file: str | None = None
    generate: Generate | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Duration(10.0)
    ready_timeout: Duration = Duration(120.0)
    on_down: Literal["stop", "continue"] = "stop"
    scrape_metrics: bool = True

    @field_validator("url")
    @classmethod
    def http_url(cls, url: str | None) -> str | None:
        if url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"url must look like http://HOST:PORT (plain HTTP/1.1), got {url!r}")
            try:
                parts.port
            except ValueError as exc:
                raise ValueError(f"url has a bad port: {exc}") from None
        return url

    @field_validator("endpoint")
    @classmethod
    def absolute(cls, endpoint: str) -> str:
        if not endpoint.startswith("/") or any(c in endpoint for c in " \r\n"):
            raise ValueError(f"endpoint must be a path starting with / and without spaces, got {endpoint!r}")
        return endpoint

    @model_validator(mode="after")
    def one_target_one_payload(self) -> "Target":
        if self.server is not None and self.url is not None:
            raise ValueError("give either server (start the bundled server) or url (an endpoint "
                             "already running), not both")
        given = [k for k in ("payload", "payload_file", "generate") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of payload, payload_file, generate; got {', '.join(given)}")
        return self


class Stage(Strict):
    duration: Duration
    target: float = Field(ge=0)


class Load(Strict):
    model: Literal["closed", "open"] = "closed"
    stages: list[Stage] = Field(min_length=1)
    start: float = Field(0.0, ge=0)
    warmup: Duration = Duration(0.0)
    arrival: Literal["constant", "poisson"] = "constant"
    seed: int = 0
    max_in_flight: int = Field(256, ge=1, le=4096)

    @model_validator(mode="after")
    def sane(self) -> "Load":
        total = sum(s.duration for s in self.stages)
        if total <= 0:
            raise ValueError("the stages add up to 0 s; give at least one stage a duration")
        if self.warmup >= total:
            raise ValueError(f"warmup ({self.warmup:g} s) leaves nothing to measure in {total:g} s of stages")
        if self.model == "closed" and max([self.start] + [s.target for s in self.stages]) > 4096:
            raise ValueError("closed model: more than 4096 concurrent users is beyond one harness host")
        return self


class Generator(Strict):
    processes: int = Field(1, ge=1, le=64)


class LocustOptions(Strict):
    """Locust engine settings: 0 workers = one local Locust process; N = master + N local workers.

    `remote_workers` more are awaited from other machines, connecting to `master_host:master_port`.
    """

    workers: int = Field(0, ge=0, le=64)
    remote_workers: int = Field(0, ge=0, le=1024)
    master_host: str = "127.0.0.1"
    master_port: int = Field(0, ge=0, le=65535)  # 0: any free port (local workers only)

    @model_validator(mode="after")
    def reachable(self) -> "LocustOptions":
        if self.remote_workers and not self.master_port:
            raise ValueError("remote_workers need a fixed master_port to connect to (e.g. 5557)")
        return self


class Fraction(float):
    """A relative tolerance: `10%` or a plain fraction such as 0.1."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(parse_fraction)


def parse_fraction(value: Any) -> float:
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"write a tolerance as 10% or 0.1, got {value!r}") from None
    if not 0 <= number < 10:
        raise ValueError(f"a tolerance must be between 0% and 1000%, got {value!r}")
    return number


class Check(Strict):
    """Tolerances of `python -m harness check` (regression gate against a baseline run)."""

    p50_may_rise: Fraction | None = None
    p95_may_rise: Fraction | None = Fraction(0.10)
    p99_may_rise: Fraction | None = None
    rps_may_fall: Fraction | None = Fraction(0.05)
    error_rate_may_rise: float = Field(0.001, ge=0, le=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    window: Duration = Duration(1.0)


def _check_threshold(text: str) -> str:
    parse_threshold(text)
    return text


ThresholdText = Annotated[str, AfterValidator(_check_threshold)]


class Capacity(Strict):
    """Capacity search: the highest open-model arrival rate at which every `slo` threshold holds."""

    slo: list[ThresholdText] = Field(min_length=1)
    start: float = Field(50.0, gt=0)  # first probe's rate (req/s)
    max_rate: float = Field(5000.0, gt=0)
    precision: Fraction = Fraction(0.05)  # stop when the failing rate is within this of the passing one
    probe: Duration = Duration(5.0)  # measured length of each probe
    warmup: Duration = Duration(2.0)
    arrival: Literal["constant", "poisson"] = "constant"
    max_probes: int = Field(14, ge=2, le=100)

    @model_validator(mode="after")
    def sane(self) -> "Capacity":
        if self.probe <= 0:
            raise ValueError("probe must be longer than 0 s")
        if self.start > self.max_rate:
            raise ValueError(f"start ({self.start:g}) is above max_rate ({self.max_rate:g})")
        if self.precision <= 0:
            raise ValueError("precision must be above 0%")
        return self


RANK_FIGURES = ("ok_rps", "rps", "p50_ms", "p95_ms", "p99_ms")


class Sweep(Strict):
    """A matrix over bundled-server settings; `python -m harness sweep` runs every combination."""

    server: dict[str, list[Any]] = Field(min_length=1)
    rank_by: Literal[RANK_FIGURES] = "ok_rps"  # type: ignore[valid-type]

    @field_validator("server")
    @classmethod
    def known_settings(cls, matrix: dict[str, list[Any]]) -> dict[str, list[Any]]:
        problems = []
        for key, values in matrix.items():
            if key not in ServerSettings.model_fields:
                near = difflib.get_close_matches(key, ServerSettings.model_fields, n=1)
                problems.append(f"{key}: not a server setting" + (f" (did you mean {near[0]!r}?)" if near else ""))
            elif not values or len({repr(v) for v in values}) != len(values):
                problems.append(f"{key}: give a list of distinct values, got {values!r}")
            else:
                for value in values:
                    try:
                        ServerSettings.model_validate({key: value})
                    except ValidationError as exc:
                        problems += [f"{key}: {value!r}: {format_error(e)}" for e in exc.errors()
                                     if tuple(e["loc"]) == (key,)]
        if problems:
            raise ValueError("; ".join(problems))
        return matrix


class Scenario(Strict):
    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    target: Target = Field(default_factory=Target)
    engine: Literal["threadpool", "locust"] = "threadpool"
    load: Load
    generator: Generator = Field(default_factory=Generator)
    locust: LocustOptions = Field(default_factory=LocustOptions)
    thresholds: list[ThresholdText] = Field(default_factory=list)
    check: Check = Field(default_factory=Check)
    sweep: Sweep | None = None
    capacity: Capacity | None = None
    repeat: int = Field(1, ge=1, le=100)  # `harness run` measures N times, each in RUN_DIR/repeat-K

    @model_validator(mode="after")
    def _repeat_is_for_plain_runs(self) -> "Scenario":
        if self.repeat > 1 and (self.sweep is not None or self.capacity is not None):
            raise ValueError("repeat applies to `harness run`; a sweep or capacity search cannot repeat "
                             "(capacity already repeats the probes that decide it)")
        return self

    @property
    def parsed_thresholds(self) -> list[Threshold]:
        return [parse_threshold(t) for t in self.thresholds]

    @property
    def duration(self) -> float:
        return float(sum(s.duration for s in self.load.stages))

    @property
    def uses_bundled_server(self) -> bool:
        return self.target.url is None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> tuple[Scenario, Path]:
    """Read, override (`key.path=value`) and validate a scenario; raises UserError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a scenario is a YAML mapping with keys such as target, load, "
                        f"thresholds; got {type(doc).__name__}")
    for override in overrides or []:
        apply_override(doc, override)
    return validate(doc, base_dir=path.parent, source=str(path)), path


def validate(doc: dict[str, Any], *, base_dir: Path, source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as exc:
        raise UserError([f"{source}: {format_error(err)}" for err in exc.errors()]) from None
    problems = _check_files(scenario, base_dir)
    if problems:
        raise UserError([f"{source}: {p}" for p in problems])
    return scenario


def _check_files(scenario: Scenario, base_dir: Path) -> list[str]:
    problems = []
    target = scenario.target
    if target.payload_file is not None:
        path = resolve(base_dir, target.payload_file)
        try:
            import orjson

            orjson.loads(path.read_bytes())
        except OSError as exc:
            problems.append(f"target.payload_file: cannot read {path}: {exc.strerror or exc}")
        except ValueError as exc:
            problems.append(f"target.payload_file: {path} is not valid JSON: {exc}")
    if target.server is not None and target.server.weights is not None:
        path = resolve(base_dir, target.server.weights)
        if not path.is_file():
            problems.append(f"target.server.weights: no such file {path}")
    return problems


def resolve(base_dir: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def format_error(err: dict[str, Any]) -> str:
    """One pydantic error of a scenario as `location: message`, with a hint for a misspelled key."""
    return schema_errors.format_error(err, Scenario)
