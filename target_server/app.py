"""The Flask app factory: endpoints, auth and JSON errors (the inference POSTs live in routes.py).

`create_app` runs inside each gunicorn worker (after fork): it builds the model, warms it up and
only then returns, so a worker never accepts a request before it can answer it.
"""
from __future__ import annotations

import orjson
import torch
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from target_server import metrics, readiness
from target_server.config import ServerConfig
from target_server.inference import Forward, Strategy, make_strategy
from target_server.models import REGISTRY, ModelSpec, build_model, warm_up
from target_server.requestlog import RequestIdWSGI
from target_server.routes import JSON, OPEN_PATHS, PREDICT_PATH, BearerCheck, InferenceRoutes


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON, headers=headers)


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
    check = BearerCheck(config.auth_token)

    @app.before_request
    def require_token() -> Response | None:
        if request.path in OPEN_PATHS or check.allows(request.headers.get("Authorization", "")):
            return None
        return json_response({"error": BearerCheck.MESSAGE}, 401, dict([BearerCheck.CHALLENGE]))


def _register_routes(app: Flask, config: ServerConfig, spec: ModelSpec, strategy: Strategy) -> None:
    # The inference POSTs are served by routes.InferenceRoutes ahead of Flask; their rules stay in
    # Flask's URL map, without a view, so other methods on them get 405 and OPTIONS its Allow list.
    app.add_url_rule(PREDICT_PATH, "predict", methods=["POST"])
    app.add_url_rule("/v2/models/<name>/infer", "v2_infer", methods=["POST"])
    app.add_url_rule("/v2/models/<name>/versions/<version>/infer", "v2_infer", methods=["POST"])
    app.wsgi_app = InferenceRoutes(app.wsgi_app, config, spec, strategy, app.logger)  # type: ignore[method-assign]
    app.wsgi_app = RequestIdWSGI(app.wsgi_app, log=config.access_log)  # type: ignore[method-assign]

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
