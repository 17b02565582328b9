"""The Flask app factory: endpoints, auth and JSON errors (the inference POSTs live in routes.py,
what they and the GET documents answer in service.py, which the FastAPI twin shares).

`create_app` runs inside each gunicorn worker (after fork): it builds the model, warms it up and
only then returns, so a worker never accepts a request before it can answer it.
"""
from __future__ import annotations

import logging

import orjson
import torch
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from target_server import metrics, readiness
from target_server.config import GENERATIVE, ServerConfig
from target_server.device import resolve_device
from target_server.inference import Forward, make_strategy
from target_server.models import REGISTRY, build_model, warm_up
from target_server.requestlog import RequestIdWSGI
from target_server.routes import InferenceRoutes
from target_server.service import JSON, OPEN_PATHS, PREDICT_PATH, BearerCheck, InferenceService


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON, headers=headers)


def create_app(config: ServerConfig | None = None) -> Flask:
    config = config or ServerConfig()
    if config.model == GENERATIVE:
        return create_generative_app(config)
    service = build_service(config, logging.getLogger("target_server"))

    app = Flask("target_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["target_server"] = {"config": config, "strategy": service.strategy, "service": service}
    _register_errors(app)
    _register_auth(app, config)
    _register_routes(app, service)
    readiness.mark_ready()
    return app


def create_generative_app(config: ServerConfig) -> Flask:
    """tinylm's app: the OpenAI endpoints (generative.service), health, /metrics and the index."""
    from target_server.generative.service import GenerativeRoutes, GenerativeService

    service = GenerativeService(config, logging.getLogger("target_server"))
    app = Flask("target_server")
    app.extensions["target_server"] = {"config": config, "strategy": service.strategy, "service": service}
    _register_errors(app)
    _register_auth(app, config)
    app.add_url_rule("/v1/completions", "completions", methods=["POST"])
    app.add_url_rule("/v1/chat/completions", "chat_completions", methods=["POST"])
    app.wsgi_app = GenerativeRoutes(app.wsgi_app, service)  # type: ignore[method-assign]
    app.wsgi_app = RequestIdWSGI(app.wsgi_app, log=config.access_log)  # type: ignore[method-assign]

    @app.get("/v1/models")
    def models() -> Response:
        return json_response(service.models())

    @app.get("/v2/health/live")
    def live() -> Response:
        return Response(status=200)

    @app.get("/v2/health/ready")
    def ready() -> Response:
        count = readiness.ready_workers()
        return Response(status=200 if count is None or count >= config.workers else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/")
    def index() -> Response:
        return json_response({"message": "target_server: POST /v1/completions or /v1/chat/completions "
                                         "(OpenAI-compatible, streaming with \"stream\": true)",
                              "model": "tinylm", "settings": config.describe()})

    readiness.mark_ready()
    return app


def build_service(config: ServerConfig, logger: logging.Logger) -> InferenceService:
    """The model built, warmed up and behind its strategy: what both web layers serve."""
    spec = REGISTRY[config.model]
    device = resolve_device(config.device) if spec.uses_torch else "cpu"  # here, in the worker: after the fork
    if spec.uses_torch:
        torch.set_num_threads(config.resolved_torch_threads)
    module = build_model(config.model, weights=config.weights, sleep_ms=config.sleep_ms)
    if module is not None:
        module = module.to(device)
    forward = Forward(spec, module, device)
    warm_up(spec, module, device)
    return InferenceService(config, spec, make_strategy(config, forward), logger, device)


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


def _register_routes(app: Flask, service: InferenceService) -> None:
    # The inference POSTs are served by routes.InferenceRoutes ahead of Flask; their rules stay in
    # Flask's URL map, without a view, so other methods on them get 405 and OPTIONS its Allow list.
    app.add_url_rule(PREDICT_PATH, "predict", methods=["POST"])
    app.add_url_rule("/v1/models/<name>:predict", "v1_predict", methods=["POST"])
    app.add_url_rule("/v2/models/<name>/infer", "v2_infer", methods=["POST"])
    app.add_url_rule("/v2/models/<name>/versions/<version>/infer", "v2_infer", methods=["POST"])
    app.wsgi_app = InferenceRoutes(app.wsgi_app, service)  # type: ignore[method-assign]
    app.wsgi_app = RequestIdWSGI(app.wsgi_app, log=service.config.access_log)  # type: ignore[method-assign]

    def answer(found: tuple[int, dict]) -> Response:
        return json_response(found[1], found[0])

    @app.get("/v2/health/live")
    def live() -> Response:
        return Response(status=200)

    @app.get("/v2/health/ready")
    def ready() -> Response:
        return Response(status=200 if service.ready() else 503)

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str = "1") -> Response:
        missing = service.unknown_model(name)
        return answer(missing) if missing else ready()

    @app.get("/v2")
    def server_metadata() -> Response:
        return json_response(service.server_metadata())

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str = "1") -> Response:
        return answer(service.model_metadata(name))

    @app.get("/v2/models/<name>/config")
    @app.get("/v2/models/<name>/versions/<version>/config")
    def model_config(name: str, version: str = "1") -> Response:
        return answer(service.model_config(name))

    @app.get("/v2/models/stats")
    @app.get("/v2/models/<name>/stats")
    @app.get("/v2/models/<name>/versions/<version>/stats")
    def model_stats(name: str | None = None, version: str = "1") -> Response:
        return answer(service.model_stats(name))

    @app.get("/v1/models/<name>")
    def v1_model(name: str) -> Response:
        return answer(service.v1_model(name))

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/")
    def index() -> Response:
        return json_response(service.index())
