"""Everything both web layers share: which inference route a request is, its checks, the model call
and its answer (errors, Server-Timing, metrics), and the documents of the GET endpoints.

Flask (routes.py, app.py) and the FastAPI twin (asgi.py) only move bytes and headers in and out
of this module, so the two answer every request alike and differ only in the web layer measured.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from werkzeug.http import HTTP_STATUS_CODES

from target_server import metrics, readiness
from target_server.batching import Overloaded
from target_server.config import ServerConfig
from target_server.inference import InferenceResult, Offload, Strategy
from target_server.models import ModelSpec
from target_server.payloads import (
    INPUT_NAME,
    OUTPUT_NAME,
    BadInput,
    parse_predict,
    parse_v1,
    parse_v2,
    predict_response,
    split_binary,
    v2_response,
)

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
PREDICT_PATH = "/predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
SERVER_NAME, SERVER_VERSION = "target_server", "0.1.0"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration"]
INFER_ENDPOINTS = ("/predict", "/v1/predict", "/v2/infer")  # their labels in /metrics

Headers = list[tuple[str, str]]


def server_timing(queue_s: float, infer_s: float, total_s: float) -> str:
    return f"queue;dur={queue_s * 1e3:.3f}, infer;dur={infer_s * 1e3:.3f}, total;dur={total_s * 1e3:.3f}"


class BearerCheck:
    """`Authorization: Bearer TOKEN`, compared in constant time."""

    CHALLENGE = ("WWW-Authenticate", 'Bearer realm="target_server"')
    MESSAGE = "missing or wrong bearer token"

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    def allows(self, header: str) -> bool:
        return hmac.compare_digest(header.encode(), self.expected)


@dataclass(frozen=True)
class Route:
    """An inference POST: `kind` is predict, v1 or v2; `model` the name in the path (v1, v2)."""

    kind: str
    model: str | None = None

    @property
    def endpoint(self) -> str:
        return {"predict": PREDICT_PATH, "v1": "/v1/predict", "v2": "/v2/infer"}[self.kind]


def v2_model_name(path: str) -> str | None:
    """The model of /v2/models/<name>[/versions/<version>]/infer, or None for any other path."""
    if not (path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX)):
        return None
    parts = path[len(V2_PREFIX):-len(V2_SUFFIX)].split("/")
    if len(parts) == 1 or (len(parts) == 3 and parts[1] == "versions" and parts[2]):
        return parts[0] or None
    return None


def inference_route(path: str) -> Route | None:
    """The inference route a POST to `path` is, or None (then it is not an inference request)."""
    if path == PREDICT_PATH:
        return Route("predict")
    name = v2_model_name(path)
    if name is not None:
        return Route("v2", name)
    if path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
        name = path[len(V1_PREFIX):-len(V1_SUFFIX)]
        if name and "/" not in name:
            return Route("v1", name)
    return None


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Headers  # Content-Type and Content-Length included


@dataclass(frozen=True)
class RequestHead:
    """The request headers the inference routes read (None: not sent)."""

    content_type: str | None = None
    authorization: str | None = None
    header_length: str | None = None  # Inference-Header-Content-Length (binary tensors)
    content_encoding: str | None = None


def json_reply(status: int, doc: object, headers: Headers | None = None) -> Reply:
    body = orjson.dumps(doc)
    return Reply(status, body, [("Content-Type", JSON), ("Content-Length", str(len(body))), *(headers or [])])


class InferenceService:
    """One worker's model behind the inference routes and the GET documents."""

    def __init__(self, config: ServerConfig, spec: ModelSpec, strategy: Strategy, logger: logging.Logger,
                 device: str = "cpu") -> None:
        self.config = config
        self.device = device  # where the model runs (config.device resolved in this worker)
        self.spec = spec
        self.strategy = strategy
        self.logger = logger
        self.max_body = config.max_body_bytes
        self.auth = BearerCheck(config.auth_token) if config.auth_token else None
        self.leak_bytes = int(config.leak_kb_per_request * 1024)
        self.leaked: list[bytes] = []  # leak_kb_per_request's hoard: never freed, on purpose

    # --- inference -------------------------------------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        return self.auth is None or self.auth.allows(authorization or "")

    def unauthorized(self) -> Reply:
        return json_reply(401, {"error": BearerCheck.MESSAGE}, [BearerCheck.CHALLENGE])

    def declared_length(self, raw: str | None) -> int | None:
        """Content-Length as a number (None when absent or unreadable); 413 past max_body_bytes."""
        try:
            length = max(0, int(raw or ""))
        except ValueError:
            return None
        if length > self.max_body:
            raise BadInput(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes", 413)
        return length

    def too_large(self) -> BadInput:
        return BadInput(f"request body exceeds the limit of {self.max_body} bytes", 413)

    def handle(self, route: Route, head: RequestHead, read_body: Callable[[], bytes]) -> Reply:
        """The whole inference request on this thread (WSGI): auth, checks, model, answer."""
        started = time.perf_counter()
        if not self.authorized(head.authorization):
            return self.unauthorized()
        try:
            parse, encode = self._plan(route, head, read_body())
            return self._answer(route, started, self.strategy.run(parse), encode)
        except BadInput as exc:
            return self._refuse(route.endpoint, started, exc)
        except Overloaded as exc:
            return self._overloaded(route.endpoint, started, exc)
        except Exception:
            return self._crashed(route, started)

    async def handle_async(self, route: Route, head: RequestHead, read_body: Callable[[], Awaitable[bytes]],
                           offload: Offload) -> Reply:
        """The same on an event loop (ASGI): forwards run in `offload`'s threads or the batcher."""
        started = time.perf_counter()
        if not self.authorized(head.authorization):
            return self.unauthorized()
        try:
            parse, encode = self._plan(route, head, await read_body())
            result = await self.strategy.run_async(parse, offload)
            return self._answer(route, started, result, encode)
        except BadInput as exc:
            return self._refuse(route.endpoint, started, exc)
        except Overloaded as exc:
            return self._overloaded(route.endpoint, started, exc)
        except Exception:
            return self._crashed(route, started)

    def _plan(self, route: Route, head: RequestHead,
              body: bytes) -> tuple[Callable[[], np.ndarray], Callable[[np.ndarray], Reply]]:
        """Check the request's form; return its parse (run by the strategy) and its encoder."""
        if head.content_encoding and head.content_encoding.strip().lower() != "identity":
            raise BadInput(f"Content-Encoding {head.content_encoding} is not supported; send the body uncompressed",
                           status=415)
        mimetype = (head.content_type or "").partition(";")[0].strip().lower()
        width, max_rows = self.spec.input_width, self.config.max_rows
        if route.kind != "v2":
            if mimetype != JSON:
                raise BadInput(f"Content-Type must be {JSON}, got {mimetype or 'none'}", status=415)
            self._check_model(route)
            parser = parse_v1 if route.kind == "v1" else parse_predict
            return (lambda: parser(body, width=width, max_rows=max_rows)), self._predictions
        binary = head.header_length is not None
        allowed = (JSON, OCTET_STREAM, "") if binary else (JSON, "")  # Triton's clients send none
        if mimetype not in allowed:
            raise BadInput(f"Content-Type must be {JSON}{' or ' + OCTET_STREAM if binary else ''} "
                           f"(or none), got {mimetype}", status=415)
        self._check_model(route)
        header, tail = split_binary(body, head.header_length or "") if binary else (body, None)
        request_doc: dict[str, Any] = {}

        def parse() -> np.ndarray:
            matrix, doc = parse_v2(header, width=width, max_rows=max_rows, binary=tail)
            request_doc.update(doc)
            return matrix

        def encode(outputs: np.ndarray) -> Reply:
            payload, json_length = v2_response(self.spec.name, request_doc, outputs)
            if json_length is None:
                return Reply(200, payload, [("Content-Type", JSON), ("Content-Length", str(len(payload)))])
            return Reply(200, payload, [("Content-Type", OCTET_STREAM), ("Content-Length", str(len(payload))),
                                        ("Inference-Header-Content-Length", str(json_length))])

        return parse, encode

    def _check_model(self, route: Route) -> None:
        if route.model is not None and route.model != self.spec.name:
            raise BadInput(f"unknown model {route.model!r}; this server serves {self.spec.name!r}", status=404)

    @staticmethod
    def _predictions(outputs: np.ndarray) -> Reply:
        payload = predict_response(outputs)
        return Reply(200, payload, [("Content-Type", JSON), ("Content-Length", str(len(payload)))])

    def _answer(self, route: Route, started: float, result: InferenceResult,
                encode: Callable[[np.ndarray], Reply]) -> Reply:
        reply = encode(result.outputs)
        if self.leak_bytes:
            self.leaked.append(b"L" * self.leak_bytes)  # written, so the pages count in RSS
        total = time.perf_counter() - started
        metrics.observe(route.endpoint, 200, total, result.queue_s, result.infer_s, result.batch_rows)
        reply.headers.append(("Server-Timing", server_timing(result.queue_s, result.infer_s, total)))
        return reply

    def _refuse(self, endpoint: str, started: float, exc: BadInput) -> Reply:
        total = time.perf_counter() - started
        metrics.observe(endpoint, exc.status, total)
        return json_reply(exc.status, {"error": str(exc)}, [("Server-Timing", server_timing(0.0, 0.0, total))])

    def refuse(self, route: Route, exc: BadInput) -> Reply:
        """A request refused before it reached `handle` (its body was too large to read)."""
        return self._refuse(route.endpoint, time.perf_counter(), exc)

    def _overloaded(self, endpoint: str, started: float, exc: Overloaded) -> Reply:
        total = time.perf_counter() - started
        metrics.observe(endpoint, 503, total)
        return json_reply(503, {"error": str(exc)}, [("Retry-After", str(exc.retry_after_s)),
                                                     ("Server-Timing", server_timing(0.0, 0.0, total))])

    def _crashed(self, route: Route, started: float) -> Reply:
        """An unexpected error: a JSON 500 counted in /metrics, the traceback in the server log."""
        self.logger.exception("Exception on %s [POST]", route.endpoint)
        return self._refuse(route.endpoint, started, BadInput(HTTP_STATUS_CODES[500], 500))

    # --- the GET documents -----------------------------------------------------------------------

    def ready(self) -> bool:
        count = readiness.ready_workers()
        return count is None or count >= self.config.workers

    def unknown_model(self, name: str) -> tuple[int, dict[str, Any]] | None:
        if name == self.spec.name:
            return None
        return 404, {"error": f"unknown model {name!r}; this server serves {self.spec.name!r}"}

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def model_metadata(self, name: str) -> tuple[int, dict[str, Any]]:
        spec, config = self.spec, self.config
        return self.unknown_model(name) or (200, {
            "name": spec.name, "versions": ["1"], "platform": f"pytorch_{config.framework}",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, spec.input_width]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, spec.output_width]}],
            "parameters": {"settings": config.describe(), "max_rows": config.max_rows,
                           "max_body_bytes": config.max_body_bytes, "framework": config.framework,
                           "device": self.device},
        })

    def model_config(self, name: str) -> tuple[int, dict[str, Any]]:
        """Triton's model configuration: rows per request as max_batch_size (the batch dimension is
        not in dims), and a dynamic_batching section exactly when the server batches."""
        spec, config = self.spec, self.config
        doc: dict[str, Any] = {
            "name": spec.name, "platform": "", "backend": "pytorch", "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": config.max_rows,
            "input": [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                       "dims": [spec.input_width], "is_shape_tensor": False, "allow_ragged_batch": False,
                       "optional": False}],
            "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [spec.output_width],
                        "label_filename": "", "is_shape_tensor": False}],
            "instance_group": [{"name": spec.name, "kind": "KIND_CPU", "count": config.workers}],
            "parameters": {"settings": {"string_value": config.describe()}},
        }
        if config.batching:
            doc["dynamic_batching"] = {"preferred_batch_size": [config.max_batch],
                                       "max_queue_delay_microseconds": int(config.max_wait_ms * 1000),
                                       "preserve_ordering": False}
        return self.unknown_model(name) or (200, doc)

    def model_stats(self, name: str | None) -> tuple[int, dict[str, Any]]:
        """Triton's statistics extension, summed over workers from the Prometheus counters. Parse and
        encode are not timed apart from the handler, so compute_input and compute_output are 0 ns."""
        if name is not None and (missing := self.unknown_model(name)):
            return missing

        def requests(ok: bool) -> float:
            return total("inference_requests_total",
                                 lambda labels: labels["endpoint"] in INFER_ENDPOINTS and (labels["status"] == "200") == ok)

        def duration(count: float, seconds: float) -> dict[str, int]:
            return {"count": int(count), "ns": int(seconds * 1e9)}

        samples = metrics.snapshot()

        def total(name: str, where: Callable[[dict[str, str]], bool] = lambda _labels: True) -> float:
            return metrics.total(samples, name, where)

        success = requests(True)
        computed = total("inference_compute_duration_seconds_count")  # one count for all three compute
        # phases: perf_analyzer refuses statistics whose compute counts differ
        stats = {
            "success": duration(success, total("inference_handler_seconds_total",
                                                       lambda labels: labels["outcome"] == "success")),
            "fail": duration(requests(False), total("inference_handler_seconds_total",
                                                            lambda labels: labels["outcome"] == "fail")),
            "queue": duration(total("inference_queue_duration_seconds_count"),
                              total("inference_queue_duration_seconds_sum")),
            "compute_input": duration(computed, 0.0),
            "compute_infer": duration(computed, total("inference_compute_duration_seconds_sum")),
            "compute_output": duration(computed, 0.0),
            "cache_hit": duration(0, 0.0),
            "cache_miss": duration(0, 0.0),
        }
        return 200, {"model_stats": [{
            "name": self.spec.name, "version": "1",
            "last_inference": int(total("inference_last_success_timestamp_ms")),
            "inference_count": int(total("inference_rows_total")),
            "execution_count": int(total("inference_forwards_total")),
            "inference_stats": stats, "batch_stats": [], "memory_usage": [],
        }]}

    def v1_model(self, name: str) -> tuple[int, dict[str, Any]]:
        """KServe v1 readiness: {"name", "ready"}; 503 until every worker has warmed up."""
        if name.endswith(V1_SUFFIX):  # GET on the predict path: the same 405 as any other wrong method
            return 405, {"error": f"{V1_PREFIX}{name} takes POST with {{\"instances\": [[...], ...]}}"}
        ready = self.ready()
        return self.unknown_model(name) or (200 if ready else 503, {"name": self.spec.name, "ready": ready})

    def index(self) -> dict[str, Any]:
        return {"message": "target_server: POST /predict with {\"inputs\": [[...]]}",
                "model": self.spec.name, "settings": self.config.describe()}
