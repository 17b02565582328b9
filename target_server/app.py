"""The Flask app factory: endpoints, input checks, auth, Server-Timing and JSON errors.

`create_app` runs inside each gunicorn worker (after fork): it builds the model, warms it up and
only then returns, so a worker never accepts a request before it can answer it.
"""
from __future__ import annotations

import hmac
import time
from typing import Callable

import numpy as np
import orjson
import torch
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from target_server import metrics, readiness
from target_server.batching import Overloaded
from target_server.config import ServerConfig
from target_server.inference import Forward, Strategy, make_strategy
from target_server.models import REGISTRY, ModelSpec, build_model, warm_up
from target_server.payloads import BadInput, parse_predict, parse_v2, predict_response, v2_response

JSON = "application/json"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON, headers=headers)


def server_timing(queue_s: float, infer_s: float, total_s: float) -> str:
    return f"queue;dur={queue_s * 1e3:.3f}, infer;dur={infer_s * 1e3:.3f}, total;dur={total_s * 1e3:.3f}"


def create_app(config: ServerConfig | None = None) -> Flask:
    config = config or ServerConfig()
    spec = REGISTRY[config.model]
    if spec.uses_torch:
        torch.set_num_threads(config.resolved_torch_threads)
    module = build_model(config.model, weights=config.weights, sleep_ms=config.sleep_ms)
    warm_up(spec, module)
    strategy = make_strategy(config, Forward(spec, module))

    app = Flask("target_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["target_server"] = {"config": config, "strategy": strategy}
    _register_errors(app)
    _register_auth(app, config)
    _register_routes(app, config, spec, strategy)
    readiness.mark_ready()
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        endpoint = request.url_rule.rule if request.url_rule is not None else "unknown"
        metrics.REQUESTS.labels(endpoint, str(status)).inc()
        return json_response({"error": exc.description}, status)


def _register_auth(app: Flask, config: ServerConfig) -> None:
    if not config.auth_token:
        return
    expected = f"Bearer {config.auth_token}".encode()

    @app.before_request
    def require_token() -> Response | None:
        if request.path in OPEN_PATHS:
            return None
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return json_response({"error": "missing or wrong bearer token"}, 401,
                                 {"WWW-Authenticate": 'Bearer realm="target_server"'})
        return None


def _register_routes(app: Flask, config: ServerConfig, spec: ModelSpec, strategy: Strategy) -> None:
    def infer(endpoint: str, parse: Callable[[bytes], np.ndarray],
              encode: Callable[[np.ndarray], bytes]) -> Response:
        started = time.perf_counter()
        if request.mimetype != JSON:
            return _refuse(endpoint, started, BadInput(
                f"Content-Type must be {JSON}, got {request.mimetype or 'none'}", status=415))
        try:
            body = request.get_data(cache=False)
            result = strategy.run(lambda: parse(body))
        except BadInput as exc:
            return _refuse(endpoint, started, exc)
        except RequestEntityTooLarge as exc:
            return _refuse(endpoint, started, BadInput(str(exc.description), status=413))
        except Overloaded as exc:
            total = time.perf_counter() - started
            metrics.observe(endpoint, 503, total)
            return json_response({"error": str(exc)}, 503,
                                 {"Retry-After": str(exc.retry_after_s),
                                  "Server-Timing": server_timing(0.0, 0.0, total)})
        payload = encode(result.outputs)
        total = time.perf_counter() - started
        metrics.observe(endpoint, 200, total, result.queue_s, result.infer_s, result.batch_rows)
        return Response(payload, mimetype=JSON,
                        headers={"Server-Timing": server_timing(result.queue_s, result.infer_s, total)})

    def _refuse(endpoint: str, started: float, exc: BadInput) -> Response:
        total = time.perf_counter() - started
        metrics.observe(endpoint, exc.status, total)
        return json_response({"error": str(exc)}, exc.status,
                             {"Server-Timing": server_timing(0.0, 0.0, total)})

    @app.post("/predict")
    def predict() -> Response:
        return infer("/predict", lambda body: parse_predict(body, width=spec.input_width,
                                                             max_rows=config.max_rows),
                     predict_response)

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def v2_infer(name: str, version: str = "1") -> Response:
        if name != spec.name:
            return _refuse("/v2/infer", time.perf_counter(), BadInput(
                f"unknown model {name!r}; this server serves {spec.name!r}", status=404))
        request_doc: dict = {}

        def parse(body: bytes) -> np.ndarray:
            matrix, doc = parse_v2(body, width=spec.input_width, max_rows=config.max_rows)
            request_doc.update(doc)
            return matrix

        return infer("/v2/infer", parse, lambda out: v2_response(spec.name, request_doc, out))

    @app.get("/v2/health/live")
    def live() -> Response:
        return Response(status=200)

    @app.get("/v2/health/ready")
    def ready() -> Response:
        count = readiness.ready_workers()
        ok = count is None or count >= config.workers
        return Response(status=200 if ok else 503)

    @app.get("/v2/models/<name>/ready")
    def model_ready(name: str) -> Response:
        if name != spec.name:
            return json_response({"error": f"unknown model {name!r}"}, 404)
        return ready()

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str = "1") -> Response:
        if name != spec.name:
            return json_response({"error": f"unknown model {name!r}; this server serves {spec.name!r}"}, 404)
        return json_response({
            "name": spec.name, "versions": ["1"], "platform": "pytorch_flask",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, spec.input_width]}],
            "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, spec.output_width]}],
            "parameters": {"settings": config.describe(), "max_rows": config.max_rows,
                           "max_body_bytes": config.max_body_bytes},
        })

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/")
    def index() -> Response:
        return json_response({"message": "target_server: POST /predict with {\"inputs\": [[...]]}",
                              "model": spec.name, "settings": config.describe()})
