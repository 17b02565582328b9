"""The FastAPI twin: the same endpoints, models, strategies, checks and errors as the Flask app,
on an event loop under gunicorn's uvicorn workers (`--framework fastapi`).

Only the web layer differs: requests are parsed and answered by the shared service (service.py)
on the worker's event loop; forwards run in a pool of `threads` threads (the noop model's in the
loop itself), or wait in the dynamic batcher on a future, holding no thread. So `workers` still
means processes, `threads` the forwards a worker runs at once, and a sweep can put the two web
layers side by side on the same knobs.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from target_server import metrics, readiness
from target_server.app import build_service
from target_server.config import ServerConfig
from target_server.requestlog import ASGIApp, Receive, RequestIdASGI, Scope, Send
from target_server.service import JSON, OPEN_PATHS, BearerCheck, InferenceService, Reply, RequestHead, Route

T = TypeVar("T")


def json_response(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


def reply_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))


def create_asgi_app(config: ServerConfig | None = None) -> ASGIApp:
    """The ASGI app of one worker: model built and warmed up before it is returned."""
    config = config or ServerConfig()
    service = build_service(config, logging.getLogger("target_server"))
    pool = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="forward")

    async def offload(call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    app = FastAPI(title="target_server", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.target_server = {"config": config, "strategy": service.strategy, "service": service}
    _register_errors(app)
    _register_inference(app, service, offload)
    _register_documents(app, service)
    readiness.mark_ready()
    outer: ASGIApp = app
    if config.auth_token:
        outer = BearerASGI(outer, BearerCheck(config.auth_token))
    return RequestIdASGI(outer, log=config.access_log)


class BearerASGI:
    """`Authorization: Bearer TOKEN` on every path but the health checks, as the Flask app asks it."""

    def __init__(self, app: ASGIApp, check: BearerCheck) -> None:
        self.app = app
        self.check = check
        self.body = orjson.dumps({"error": BearerCheck.MESSAGE})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if self.check.allows(header.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        name, value = BearerCheck.CHALLENGE
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(self.body)).encode()),
                                (name.lower().encode(), value.encode())]})
        await send({"type": "http.response.body", "body": self.body})


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        route = request.scope.get("route")
        metrics.REQUESTS.labels(getattr(route, "path", "unknown"), str(exc.status_code)).inc()
        return json_response({"error": str(exc.detail)}, exc.status_code, dict(exc.headers or {}))


def _register_inference(app: FastAPI, service: InferenceService, offload: Any) -> None:
    async def infer(request: Request, route: Route) -> Response:
        headers = request.headers
        head = RequestHead(headers.get("content-type"), headers.get("authorization"),
                           headers.get("inference-header-content-length"), headers.get("content-encoding"))

        async def read_body() -> bytes:
            """The body, refused with 413 past max_body_bytes (declared or as it arrives)."""
            service.declared_length(headers.get("content-length"))
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > service.max_body:
                    raise service.too_large()
                chunks.append(chunk)
            return b"".join(chunks)

        return reply_response(await service.handle_async(route, head, read_body, offload))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await infer(request, Route("predict"))

    @app.post("/v1/models/{name}:predict")
    async def v1_predict(request: Request, name: str) -> Response:
        return await infer(request, Route("v1", name))

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(request: Request, name: str, version: str = "1") -> Response:
        return await infer(request, Route("v2", name))


def _register_documents(app: FastAPI, service: InferenceService) -> None:
    def answer(found: tuple[int, dict]) -> Response:
        return json_response(found[1], found[0])

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready() else 503)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = "1") -> Response:
        missing = service.unknown_model(name)
        return answer(missing) if missing else await ready()

    @app.get("/v2")
    async def server_metadata() -> Response:
        return json_response(service.server_metadata())

    @app.get("/v2/models/stats")
    async def all_stats() -> Response:
        return answer(service.model_stats(None))

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = "1") -> Response:
        return answer(service.model_metadata(name))

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str = "1") -> Response:
        return answer(service.model_config(name))

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def model_stats(name: str, version: str = "1") -> Response:
        return answer(service.model_stats(name))

    @app.get("/v1/models/{name}")
    async def v1_model(name: str) -> Response:
        return answer(service.v1_model(name))

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def index() -> Response:
        return json_response(service.index())
