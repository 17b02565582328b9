"""The scenario schema: every key of a scenario file as pydantic models, validated together.

Every problem is reported at once as `location: message` (e.g. `load.stages[2].duration: duration
must not be negative`), with a "did you mean" hint for misspelt keys.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from harness.results import figures
from harness.scenario import messages as schema_errors
from harness.scenario.expect import parse_path
from harness.scenario.thresholds import Threshold, parse_threshold
from harness.scenario.units import parse_duration
from target_server.config import Knob, ServerConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Duration(float):
    """Seconds, parsed from 10s / 2m / 500ms / plain numbers."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(lambda v: parse_duration(v))


class ServerSettingsBase(Strict):
    """Settings of the bundled server (see `python -m target_server --help`), checked together."""

    @model_validator(mode="after")
    def consistent(self) -> ServerSettingsBase:
        problems = self.to_config().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_config(self, **overrides: Any) -> ServerConfig:
        return ServerConfig.from_mapping({**self.model_dump(), **overrides})

    if TYPE_CHECKING:  # the fields are made from ServerConfig's knobs below
        def __getattr__(self, name: str) -> Any: ...


def _server_field(knob: Knob) -> tuple[Any, Any]:
    kind: Any = Literal[knob.choices] if knob.choices else knob.type
    if knob.optional:
        kind = kind | None
    return kind, Field(knob.default, description=knob.help, ge=knob.minimum)


# `target.server`: every scenario-settable knob of target_server.config.ServerConfig, its one source
if TYPE_CHECKING:
    ServerSettings = ServerSettingsBase
else:
    ServerSettings = create_model("ServerSettings", __base__=ServerSettingsBase,
                                  __doc__=ServerSettingsBase.__doc__,
                                  **{k.name: _server_field(k) for k in ServerConfig.knobs() if k.scenario})


class Generate(Strict):
    """Random (seeded) input rows of a given shape, for /predict or KServe v2 bodies."""

    shape: list[int] = Field(min_length=2, max_length=2, description="[rows, columns] of each request body")
    format: Literal["predict", "v2", "v2-binary"] = Field(
        "predict", description="predict: `{\"inputs\": [[...]]}`; v2: a KServe v2 tensor in JSON; "
                               "v2-binary: the same tensor as raw little-endian FP32 bytes after a JSON "
                               "header (Triton's binary tensor data extension)")
    input_name: str = Field("input-0", description="the tensor's name in a v2 body")
    low: float = Field(-1.0, description="smallest value (uniform random)")
    high: float = Field(1.0, description="largest value (uniform random)")
    seed: int = Field(0, description="random seed: the same seed gives the same bodies")
    variants: int = Field(16, ge=1, le=4096, description="distinct bodies generated and cycled through")

    @field_validator("shape")
    @classmethod
    def positive(cls, shape: list[int]) -> list[int]:
        if any(d < 1 for d in shape):
            raise ValueError(f"every dimension must be at least 1, got {shape}")
        return shape


class Dataset(Strict):
    """Request data from a file: one request per line, cycled through (a longer run wraps around)."""

    path: str = Field(description="a jsonl file (relative to the scenario file); each line a JSON body, "
                                  "or an object `{body, endpoint, method, headers, name}` (any but body "
                                  "may be left out)")
    order: Literal["sequential", "shuffle"] = Field("sequential",
                                                    description="sequential: in file order; shuffle: in a "
                                                                "seeded random order (the same each run)")
    seed: int = Field(0, description="seed of the shuffle")


class RequestId(Strict):
    """A unique id per request, sent as a header and recorded in the rows (`request_id`)."""

    header: str = Field("X-Request-ID", pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
                        description="the header that carries `<run>-<gen>-<seq>`")


class RequestKind(Strict):
    """One kind of request of a mix (target.requests), chosen by weight."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$",
                      description="names its rows, its figures in by_name and thresholds: `p95_ms[NAME] < 50`")
    endpoint: str | None = Field(None, description="path to load (default: target.endpoint)")
    method: Literal["POST", "GET"] | None = Field(None, description="HTTP method (default: target.method)")
    payload: Any = Field(None, description="inline JSON body (default: the article's) ...")
    payload_file: str | None = Field(None, description="... or a JSON file (relative to the scenario file) ...")
    generate: Generate | None = Field(None, description="... or seeded random tensors ...")
    dataset: Dataset | None = Field(None, description="... or one request per line of a jsonl file")
    headers: dict[str, str] = Field(default_factory=dict, description="headers on top of target.headers")
    weight: float = Field(1.0, gt=0, description="relative share of the requests")

    @field_validator("payload")
    @classmethod
    def json_body(cls, payload: Any) -> Any:
        return Target.json_body(payload)

    @field_validator("endpoint")
    @classmethod
    def absolute(cls, endpoint: str | None) -> str | None:
        return None if endpoint is None else Target.absolute(endpoint)

    @model_validator(mode="after")
    def one_payload(self) -> RequestKind:
        given = [k for k in ("payload", "payload_file", "generate", "dataset") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of payload, payload_file, generate, dataset; got {', '.join(given)}")
        return self


class Tls(Strict):
    """HTTPS client settings (both engines): how the server's certificate is checked, and ours."""

    verify: bool = Field(True, description="check the server's certificate and host name "
                                           "(`--insecure` on the command line sets false)")
    ca_file: str | None = Field(None, description="PEM file of the CA(s) to trust instead of the system's "
                                                  "(relative to the scenario file)")
    cert_file: str | None = Field(None, description="client certificate (PEM) for servers that require "
                                                    "one (mTLS); may hold the key too")
    key_file: str | None = Field(None, description="the client certificate's private key (PEM), "
                                                   "when not in cert_file")
    server_name: str | None = Field(None, min_length=1,
                                    description="name sent as SNI and checked against the certificate, "
                                                "instead of the url's host")

    @model_validator(mode="after")
    def key_needs_cert(self) -> Tls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self

    @property
    def customised(self) -> list[str]:
        """The keys that only mean something over HTTPS (verify: false is harmless over HTTP)."""
        return [k for k in ("ca_file", "cert_file", "key_file", "server_name") if getattr(self, k) is not None]


class Expect(Strict):
    """Response checks: what a response must be to count as a success (else an error of kind check)."""

    status: list[int] = Field([200], min_length=1,
                              description="statuses that pass (checked on every response); another "
                                          "status >= 400 stays an error of kind http")
    json_path: str | None = Field(None,
                                  description="the body must be JSON with a field at this path, e.g. "
                                              "`predictions` or `outputs[0].data`")
    equals: Any = Field(None, description="... equal to this value (the whole body without json_path; "
                                          "null: not compared)")
    contains: str | None = Field(None, min_length=1, description="the body must contain this text")
    sample: float = Field(1.0, ge=0, le=1,
                          description="fraction of responses whose body is checked (seeded); only "
                                      "those keep and parse their body")
    seed: int = Field(0, description="seed of the sampled fraction")

    @field_validator("json_path")
    @classmethod
    def readable_path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path

    @field_validator("equals")
    @classmethod
    def json_value(cls, value: Any) -> Any:
        import orjson

        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise ValueError(f"equals is not a JSON value: {exc}") from None
        return value

    @field_validator("status")
    @classmethod
    def http_statuses(cls, statuses: list[int]) -> list[int]:
        bad = [s for s in statuses if not 100 <= s <= 599]
        if bad:
            raise ValueError(f"not HTTP statuses: {bad}")
        return statuses


API_ENDPOINTS = {"openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions"}


class TokenCount(Strict):
    """A length in tokens, drawn per request variant from a normal distribution, rounded and clipped."""

    mean: float = Field(gt=0, le=1_000_000, description="mean length (tokens)")
    stddev: float = Field(0.0, ge=0, description="standard deviation (0: every request the same length)")
    min: int = Field(1, ge=1, description="shortest length")
    max: int | None = Field(None, ge=1, description="longest length (default: no limit)")

    @model_validator(mode="after")
    def ordered(self) -> TokenCount:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Prompts(Strict):
    """Synthetic prompts for a generative `api`: text of about `input_tokens` tokens (common English
    words, one token each in GPT- and Llama-style tokenizers), asking for `output_tokens` tokens."""

    input_tokens: TokenCount = Field(default_factory=lambda: TokenCount(mean=128),
                                     description="prompt length (tokens, approximate)")
    output_tokens: TokenCount = Field(default_factory=lambda: TokenCount(mean=64),
                                      description="output length asked with max_tokens")
    exact_output: bool = Field(True, description="also send `ignore_eos: true` and `min_tokens` so the server "
                                                 "generates exactly max_tokens (vLLM, SGLang, llama.cpp accept "
                                                 "them; turn off for servers that refuse unknown fields)")
    variants: int = Field(64, ge=1, le=100_000, description="distinct prompts generated and cycled through")
    seed: int = Field(0, description="random seed: the same seed gives the same prompts")


class ServerProcess(Strict):
    """Which local process is a url target's server, for its CPU and memory (and its children's as
    workers); without it, a target on this machine is found by the process listening on its port."""

    pid: int | None = Field(None, ge=1, description="the server's process id ...")
    match: str | None = Field(None, min_length=1, description="... or a regular expression searched in every "
                                                              "command line (one process tree must match) ...")
    port: int | None = Field(None, ge=1, le=65535, description="... or the TCP port its process listens on")

    @field_validator("match")
    @classmethod
    def compiles(cls, match: str | None) -> str | None:
        if match is not None:
            try:
                re.compile(match)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return match

    @model_validator(mode="after")
    def exactly_one(self) -> ServerProcess:
        given = [k for k in ("pid", "match", "port") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of pid, match and port, got {', '.join(given) or 'none'}")
        return self


class Target(Strict):
    server: ServerSettings | None = Field(None,
                                          description="start the bundled server with these "
                                                      "settings (the default when there is no url) ...")
    url: str | None = Field(None,
                            description="... or an endpoint already running (then no server): "
                                        "http://HOST:PORT or https://HOST[:PORT], optionally with a base "
                                        "path that is put before endpoint (https://HOST/api + /predict)")
    tls: Tls = Field(default_factory=Tls, description="HTTPS settings, for an https url or a bundled "
                                                      "server with tls: true")
    endpoint: str = Field("/predict", description="path to load")
    method: Literal["POST", "GET"] = Field("POST", description="HTTP method (GET sends no body)")
    payload: Any = Field(None,
                         description="inline JSON body; without payload, payload_file "
                                     "and generate it is `{inputs: [[1.0, 2.0, 3.0]]}` ...")
    payload_file: str | None = Field(None, description="... or a JSON file (relative to the scenario file) ...")
    generate: Generate | None = Field(None, description="... or seeded random tensors ...")
    dataset: Dataset | None = Field(None, description="... or one request per line of a jsonl file")
    requests: list[RequestKind] | None = Field(None, min_length=1,
                                               description="a mix of several kinds of request instead of one, "
                                                           "each chosen by its weight (seeded by mix_seed)")
    mix_seed: int = Field(0, description="seed of the mix's choices: the same seed, the same sequence")
    request_id: RequestId | None = Field(None, description="send a unique id per request in a header "
                                                           "and record it (off by default)")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="extra headers, e.g. `{Authorization: \"Bearer ...\"}`")
    timeout: Duration = Field(Duration(10.0),
                              description="per request; a request past it is an error of kind timeout")
    ready_timeout: Duration = Field(Duration(120.0),
                                    description="how long the bundled server may take to load and warm up")
    on_down: Literal["stop", "continue"] = Field("stop",
                                                 description="when the target stops accepting "
                                                             "connections mid-run: stop (exit 3) or continue")
    scrape_metrics: bool = Field(True,
                                 description="GET /metrics about once a second "
                                             "into metrics.csv (quietly off on 404)")
    expect: Expect | None = Field(None,
                                  description="response checks; without it, the bundled server's "
                                              "/predict must answer `predictions` and v2 `outputs`")
    api: Literal["openai-chat", "openai-completions"] | None = Field(
        None, description="a generative API: send OpenAI-style requests and time every token of the "
                          "answer (TTFT, ITL, TPOT); endpoint defaults to its path")
    model: str | None = Field(None, min_length=1,
                              description="the requests' `model` (default: the first of GET /v1/models)")
    stream: bool | None = Field(None, description="ask for a streamed answer (default with an api: true)")
    prompts: Prompts | None = Field(None, description="with an api: synthetic prompts (the default) ...")
    process: ServerProcess | None = Field(None, description="a url target's server process, for its CPU and "
                                                            "memory (default: the one listening on the url's "
                                                            "port, when it is on this machine)")

    @field_validator("url")
    @classmethod
    def http_url(cls, url: str | None) -> str | None:
        if url is not None:
            from harness.scenario.urls import split_url

            split_url(url)
        return url

    @field_validator("payload")
    @classmethod
    def json_body(cls, payload: Any) -> Any:
        """The body goes out as orjson encodes it: refuse what it cannot encode (non-string keys)
        or would silently send as null (NaN, infinity)."""
        import json

        import orjson

        try:
            json.dumps(payload, allow_nan=False, default=str)
            orjson.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"payload is not a JSON document: {exc}") from None
        return payload

    @field_validator("endpoint")
    @classmethod
    def absolute(cls, endpoint: str) -> str:
        if not endpoint.startswith("/") or any(c in endpoint for c in " \r\n"):
            raise ValueError(f"endpoint must be a path starting with / and without spaces, got {endpoint!r}")
        return endpoint

    @model_validator(mode="after")
    def one_target_one_payload(self) -> Target:
        if self.server is not None and self.url is not None:
            raise ValueError("give either server (start the bundled server) or url (an endpoint "
                             "already running), not both")
        if self.process is not None and self.url is None:
            raise ValueError("process names a url target's server; the harness watches the bundled server it "
                             "starts itself")
        https = self.url.startswith("https://") if self.url is not None else bool(getattr(self.server, "tls", False))
        if self.tls.customised and not https:
            raise ValueError(f"tls.{self.tls.customised[0]} needs an https:// url or a bundled server "
                             "with tls: true")
        given = [k for k in ("payload", "payload_file", "generate", "dataset", "requests")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of payload, payload_file, generate, dataset, requests; got {', '.join(given)}")
        names = [kind.name for kind in self.requests or []]
        if len(set(names)) != len(names):
            raise ValueError(f"requests: every name once, got {names}")
        if self.api is None:
            extra = [k for k in ("model", "stream", "prompts") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} need api: openai-chat or openai-completions")
        else:
            if self.method != "POST":
                raise ValueError("an api sends POST requests")
            other = [k for k in ("payload", "payload_file", "generate", "requests", "expect") if getattr(self, k)]
            if other:
                raise ValueError(f"with api: {self.api}, requests are built from prompts; "
                                 f"{', '.join(other)} do not apply")
            if self.dataset is not None and self.prompts is not None:
                raise ValueError("give prompts or dataset, not both")
            if "endpoint" not in self.model_fields_set:
                self.endpoint = API_ENDPOINTS[self.api]
        return self

    @property
    def streamed(self) -> bool:
        """Whether requests ask for a streamed answer (with an api)."""
        return self.api is not None and self.stream is not False


class Stage(Strict):
    duration: Duration = Field(description="time to move from the previous target to this one; 0s jumps at once")
    target: float = Field(ge=0,
                          description="concurrent users (closed model) or "
                                      "requests/second (open model) at the end of the stage")


class Trace(Strict):
    """Replay recorded arrival times (open model): one request per line of a jsonl or csv file."""

    path: str = Field(description="the trace (relative to the scenario file): `.jsonl`, one JSON object a "
                                  "line, or `.csv` with a header line naming its columns")
    time_field: str = Field("timestamp", min_length=1,
                            description="the key (jsonl) or column (csv) of each arrival's time: relative "
                                        "offsets or absolute timestamps; the replay starts at the earliest")
    unit: Literal["s", "ms"] = Field("s", description="unit of the times")
    speed: float = Field(1.0, gt=0, le=1000, description="replay speed: 2 replays twice as fast")
    body_field: str | None = Field(None, min_length=1,
                                   description="the key (jsonl: any JSON value) or column (csv: JSON text) "
                                               "of each arrival's request body; null: the target's body")


class Load(Strict):
    model: Literal["closed", "open"] = Field("closed",
                                             description="closed: target = concurrent "
                                                         "users; open: target = requests/second "
                                                         "(implied by a trace)")
    stages: list[Stage] = Field(default_factory=list,
                                description="each moves linearly from the previous target to "
                                            "its own (k6 style); repeating a target holds it; "
                                            "none with a trace")
    trace: Trace | None = Field(None,
                                description="open model at a recorded trace's arrival times instead of "
                                            "stages; the run lasts as long as the trace (÷ speed)")
    start: float = Field(0.0, ge=0, description="target before the first stage")
    warmup: Duration = Field(Duration(0.0), description="excluded from the summary")
    arrival: Literal["constant", "poisson"] = Field("constant",
                                                    description="open model: evenly spaced or "
                                                                "Poisson arrivals (seeded, reproducible)")
    seed: int = Field(0, description="Poisson seed")
    max_in_flight: int = Field(256, ge=1, le=4096, description="open model: cap on requests in flight (threads)")

    @model_validator(mode="before")
    @classmethod
    def _trace_is_open(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("trace") is not None and "model" not in data:
            return {**data, "model": "open"}
        return data

    @model_validator(mode="after")
    def sane(self) -> Load:
        if self.trace is not None:
            if self.stages:
                raise ValueError("give stages or a trace, not both (a trace sets its own arrival times)")
            if self.model != "open":
                raise ValueError("a trace drives the open model; drop model: closed")
            if self.arrival != "constant":
                raise ValueError("arrival does not apply to a trace (its arrival times are recorded)")
            return self
        if not self.stages:
            raise ValueError("give stages (or a trace to replay)")
        total = sum(s.duration for s in self.stages)
        if total <= 0:
            raise ValueError("the stages add up to 0 s; give at least one stage a duration")
        if self.warmup >= total:
            raise ValueError(f"warmup ({self.warmup:g} s) leaves nothing to measure in {total:g} s of stages")
        if self.model == "closed" and max([self.start] + [s.target for s in self.stages]) > 4096:
            raise ValueError("closed model: more than 4096 concurrent users is beyond one harness host")
        return self


class Generator(Strict):
    processes: int = Field(1, ge=1, le=64,
                           description="threadpool: generator processes; raise it when one core is not enough")


class LocustOptions(Strict):
    """Locust engine settings: 0 workers = one local Locust process; N = master + N local workers.

    `remote_workers` more are awaited from other machines, connecting to `master_host:master_port`.
    """

    workers: int = Field(0, ge=0, le=64, description="0: one local Locust process; N: master + N local workers")
    remote_workers: int = Field(0, ge=0, le=1024, description="more workers to wait for from other machines")
    master_host: str = Field("127.0.0.1", description="where the master listens")
    master_port: int = Field(0, ge=0, le=65535,
                             description="0: any free port (local workers only); fix it for remote workers")

    @model_validator(mode="after")
    def reachable(self) -> LocustOptions:
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

    p50_may_rise: Fraction | None = Field(None, description="how far the p50 may rise (null = not judged)")
    p95_may_rise: Fraction | None = Field(Fraction(0.10),
                                          description="how far the p95 may rise (null = not judged)")
    p99_may_rise: Fraction | None = Field(None, description="how far the p99 may rise (null = not judged)")
    rps_may_fall: Fraction | None = Field(Fraction(0.05),
                                          description="how far successful req/s may fall (null = not judged)")
    error_rate_may_rise: float = Field(0.001, ge=0, le=1, description="absolute rise of the error rate allowed")
    ttft_p95_may_rise: Fraction | None = Field(Fraction(0.10), description="generative runs: how far the TTFT "
                                                                           "p95 may rise (null = not judged)")
    itl_p50_may_rise: Fraction | None = Field(Fraction(0.10), description="generative runs: how far the ITL p50 "
                                                                          "may rise (null = not judged)")
    tokens_may_fall: Fraction | None = Field(Fraction(0.05), description="generative runs: how far output "
                                                                         "tokens/s may fall (null = not judged)")
    saturation_may_fall: Fraction | None = Field(Fraction(0.10), description="ramps: how far the saturation "
                                                                             "req/s may fall (null = not judged)")
    knee_may_fall: Fraction | None = Field(Fraction(0.25), description="closed-model ramps: how far the knee "
                                                                       "(users) may fall (null = not judged)")
    knee_rps_may_fall: Fraction | None = Field(Fraction(0.25), description="open-model ramps: how far the knee "
                                                                           "(req/s) may fall (null = not judged)")
    gpu_memory_may_rise: Fraction | None = Field(Fraction(0.10), description="runs with GPU telemetry (both "
                                                                             "sides): how far the peak GPU memory "
                                                                             "may rise (null = not judged)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence of the bootstrap interval")
    window: Duration = Field(Duration(1.0), description="width of the windows the bootstrap resamples")


def _check_threshold(text: str) -> str:
    parse_threshold(text)
    return text


ThresholdText = Annotated[str, AfterValidator(_check_threshold)]


class Capacity(Strict):
    """Capacity search: the highest open-model arrival rate at which every `slo` threshold holds."""

    slo: list[ThresholdText] = Field(min_length=1, description="threshold expressions, all must hold")
    start: float = Field(50.0, gt=0, description="first probe's rate (req/s)")
    max_rate: float = Field(5000.0, gt=0, description="never probe above this (req/s)")
    precision: Fraction = Field(Fraction(0.05),
                                description="stop when first failing rate <= last passing rate x (1 + precision)")
    probe: Duration = Field(Duration(5.0), description="measured length of each probe")
    warmup: Duration = Field(Duration(2.0), description="warm-up at the same rate before each probe")
    arrival: Literal["constant", "poisson"] = Field("constant", description="arrivals of the probes")
    max_probes: int = Field(14, ge=2, le=100, description="most probes in one search")

    @model_validator(mode="after")
    def sane(self) -> Capacity:
        if self.probe <= 0:
            raise ValueError("probe must be longer than 0 s")
        if self.start > self.max_rate:
            raise ValueError(f"start ({self.start:g}) is above max_rate ({self.max_rate:g})")
        if self.precision <= 0:
            raise ValueError("precision must be above 0%")
        return self




class Sweep(Strict):
    """A matrix over bundled-server settings; `python -m harness sweep` runs every combination."""

    server: dict[str, list[Any]] = Field(min_length=1,
                                         description="target.server key -> list of "
                                                     "values; every combination runs")
    rank_by: Literal[figures.RANKABLE] = Field("ok_rps",  # type: ignore[valid-type]
                                               description="the figure to rank by, best first in its better "
                                                           "direction; by capacity with a capacity block")
    repeat: int = Field(1, ge=1, le=20, description="measure every combination N times, round by round; a "
                                                    "winner needs its interval clear of the runner-up's")

    @field_validator("server")
    @classmethod
    def known_settings(cls, matrix: dict[str, list[Any]]) -> dict[str, list[Any]]:
        problems = []
        for key, values in matrix.items():
            if key not in ServerSettings.model_fields:
                near = difflib.get_close_matches(key, ServerSettings.model_fields, n=1)
                problems.append(f"{key}: not a server setting" + (f" (did you mean {near[0]!r}?)" if near else ""))
            elif not values:  # a value listed twice runs twice, as copies: an A/A check of the noise
                problems.append(f"{key}: give a list of values, got {values!r}")
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


class Goodput(Strict):
    """Service-level objectives of a generative run: goodput counts the requests meeting all of them."""

    ttft_ms: float | None = Field(None, gt=0, description="time to first token at most this (ms)")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token at most this (ms)")
    e2e_ms: float | None = Field(None, gt=0, description="whole-request latency at most this (ms)")

    @model_validator(mode="after")
    def some_objective(self) -> Goodput:
        if self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None:
            raise ValueError("give at least one of ttft_ms, tpot_ms, e2e_ms")
        return self


class Scenario(Strict):
    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="letters, digits, . _ -; names the run folder")
    description: str = Field("", description="free text")
    target: Target = Field(default_factory=Target,
                           description="the system under test: the bundled server or a URL")
    engine: Literal["threadpool", "locust"] = Field("threadpool", description="what sends the load")
    load: Load = Field(description="the load model and its stages")
    generator: Generator = Field(default_factory=Generator, description="threadpool engine settings")
    locust: LocustOptions = Field(default_factory=LocustOptions,
                                  description="Locust engine settings (engine: locust only)")
    thresholds: list[ThresholdText] = Field(default_factory=list,
                                            description="pass criteria, `metric op number`, e.g. `p95_ms < 200`")
    check: Check = Field(default_factory=Check, description="regression gate tolerances (`harness check`)")
    sweep: Sweep | None = Field(None, description="a matrix of server settings (`harness sweep`)")
    goodput: Goodput | None = Field(None, description="SLOs of a generative run's goodput (target.api)")
    capacity: Capacity | None = Field(None, description="capacity search under an SLO (`harness capacity`)")
    metrics_port: int | None = Field(None, ge=1, le=65535,
                                     description="serve the run's live figures in Prometheus text format on "
                                                 "127.0.0.1:PORT/metrics while it lasts (`--metrics-port`)")
    repeat: int = Field(1, ge=1, le=100,
                        description="`harness run` measures N times, each a full run in RUN_DIR/repeat-K")

    @model_validator(mode="after")
    def _repeat_is_for_plain_runs(self) -> Scenario:
        if self.repeat > 1 and (self.sweep is not None or self.capacity is not None):
            raise ValueError("repeat applies to `harness run`; a sweep repeats with sweep.repeat (or "
                             "`harness sweep --repeat N`), and a capacity search already repeats the probes "
                             "that decide it")
        return self

    @model_validator(mode="after")
    def _capacity_thresholds(self) -> Scenario:
        on_result = [t for t in self.thresholds if parse_threshold(t).metric in figures.CAPACITY]
        if on_result and self.capacity is None:
            raise ValueError(f"thresholds {', '.join(on_result)} judge a capacity search; this scenario has no "
                             "capacity: block")
        if self.capacity is not None and len(on_result) < len(self.thresholds):
            raise ValueError("in a capacity scenario the thresholds judge the search's result (e.g. "
                             "`capacity_rps >= 150`); what each probe must meet belongs in capacity.slo")
        return self

    @model_validator(mode="after")
    def _generative_settings(self) -> Scenario:
        if self.goodput is not None and self.target.api is None:
            raise ValueError("goodput needs target.api (a generative endpoint)")
        return self

    @property
    def goodput_slo(self) -> dict[str, float | None] | None:
        """The goodput objectives as plain data for the analysis (None without them)."""
        return self.goodput.model_dump() if self.goodput is not None else None

    @property
    def parsed_thresholds(self) -> list[Threshold]:
        return [parse_threshold(t) for t in self.thresholds]

    @property
    def duration(self) -> float:
        return float(sum(s.duration for s in self.load.stages))

    @property
    def uses_bundled_server(self) -> bool:
        return self.target.url is None


def format_error(err: Mapping[str, Any]) -> str:
    """One pydantic error of a scenario as `location: message`, with a hint for a misspelled key."""
    return schema_errors.format_error(err, Scenario)
