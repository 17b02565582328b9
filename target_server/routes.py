"""The inference routes as a bare WSGI app in front of Flask: the hot path of every benchmark.

Flask's per-request machinery (app and request contexts, URL adapter, session, signals, Request
and Response objects) cost more CPU than the parse and the `linear` forward together: `noop`
/predict took 90 µs in-process through Flask and 15 µs here, and 0.36 against 0.24 ms of server
CPU per request under wrk; with one gthread worker all of it runs under one GIL. So POST /predict
and POST /v2/models/<name>/infer are answered here straight from the WSGI environ, with the same
checks, errors, headers and metrics; every other request (other paths, other methods on these
paths) goes on to Flask.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
import orjson
from werkzeug.http import HTTP_STATUS_CODES

from target_server import metrics
from target_server.batching import Overloaded
from target_server.config import ServerConfig
from target_server.inference import Strategy
from target_server.models import ModelSpec
from target_server.payloads import BadInput, parse_predict, parse_v2, predict_response, v2_response

JSON = "application/json"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
PREDICT_PATH = "/predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"

StartResponse = Callable[..., object]
WSGIApp = Callable[..., Iterable[bytes]]  # (environ, start_response) -> body
Headers = list[tuple[str, str]]


def server_timing(queue_s: float, infer_s: float, total_s: float) -> str:
    return f"queue;dur={queue_s * 1e3:.3f}, infer;dur={infer_s * 1e3:.3f}, total;dur={total_s * 1e3:.3f}"


class BearerCheck:
    """`Authorization: Bearer TOKEN`, compared in constant time; shared by this app and Flask's hook."""

    CHALLENGE = ("WWW-Authenticate", 'Bearer realm="target_server"')
    MESSAGE = "missing or wrong bearer token"

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    def allows(self, header: str) -> bool:
        return hmac.compare_digest(header.encode(), self.expected)


def v2_model_name(path: str) -> str | None:
    """The model of /v2/models/<name>[/versions/<version>]/infer, or None for any other path."""
    if not (path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX)):
        return None
    parts = path[len(V2_PREFIX):-len(V2_SUFFIX)].split("/")
    if len(parts) == 1 or (len(parts) == 3 and parts[1] == "versions" and parts[2]):
        return parts[0] or None
    return None


class InferenceRoutes:
    """WSGI middleware answering the inference POSTs itself and passing everything else to Flask."""

    def __init__(self, fallback: WSGIApp, config: ServerConfig, spec: ModelSpec, strategy: Strategy,
                 logger: logging.Logger) -> None:
        self.fallback = fallback
        self.spec = spec
        self.strategy = strategy
        self.logger = logger
        self.max_body = config.max_body_bytes
        self.max_rows = config.max_rows
        self.auth = BearerCheck(config.auth_token) if config.auth_token else None
        self.status_lines = {code: f"{code} {reason}" for code, reason in HTTP_STATUS_CODES.items()}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            path = environ.get("PATH_INFO", "")
            if path == PREDICT_PATH:
                return self._guarded(environ, start_response, None)
            name = v2_model_name(path)
            if name is not None:
                return self._guarded(environ, start_response, name)
        return self.fallback(environ, start_response)

    def _guarded(self, environ: dict, start_response: StartResponse, v2_name: str | None) -> list[bytes]:
        """Auth, then the route; an unexpected error is a JSON 500 counted in /metrics, as in Flask."""
        started = time.perf_counter()
        if self.auth is not None and not self.auth.allows(environ.get("HTTP_AUTHORIZATION", "")):
            return self._respond(start_response, 401, {"error": BearerCheck.MESSAGE}, [BearerCheck.CHALLENGE])
        endpoint = PREDICT_PATH if v2_name is None else "/v2/infer"
        try:
            if v2_name is None:
                return self._predict(environ, start_response, started)
            return self._v2_infer(environ, start_response, started, v2_name)
        except Exception:
            self.logger.exception("Exception on %s [POST]", environ.get("PATH_INFO"))
            return self._refuse(start_response, endpoint, started, BadInput(HTTP_STATUS_CODES[500], 500))

    def _predict(self, environ: dict, start_response: StartResponse, started: float) -> list[bytes]:
        width, max_rows = self.spec.input_width, self.max_rows
        return self._infer(environ, start_response, started, PREDICT_PATH,
                           lambda body: parse_predict(body, width=width, max_rows=max_rows), predict_response)

    def _v2_infer(self, environ: dict, start_response: StartResponse, started: float,
                  name: str) -> list[bytes]:
        spec = self.spec
        if name != spec.name:
            return self._refuse(start_response, "/v2/infer", started, BadInput(
                f"unknown model {name!r}; this server serves {spec.name!r}", status=404))
        request_doc: dict = {}

        def parse(body: bytes) -> np.ndarray:
            matrix, doc = parse_v2(body, width=spec.input_width, max_rows=self.max_rows)
            request_doc.update(doc)
            return matrix

        return self._infer(environ, start_response, started, "/v2/infer", parse,
                           lambda out: v2_response(spec.name, request_doc, out))

    def _infer(self, environ: dict, start_response: StartResponse, started: float, endpoint: str,
               parse: Callable[[bytes], np.ndarray], encode: Callable[[np.ndarray], bytes]) -> list[bytes]:
        try:
            mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            if mimetype != JSON:
                raise BadInput(f"Content-Type must be {JSON}, got {mimetype or 'none'}", status=415)
            body = self._read_body(environ)
            result = self.strategy.run(lambda: parse(body))
        except BadInput as exc:
            return self._refuse(start_response, endpoint, started, exc)
        except Overloaded as exc:
            total = time.perf_counter() - started
            metrics.observe(endpoint, 503, total)
            return self._respond(start_response, 503, {"error": str(exc)},
                                 [("Retry-After", str(exc.retry_after_s)),
                                  ("Server-Timing", server_timing(0.0, 0.0, total))])
        payload = encode(result.outputs)
        total = time.perf_counter() - started
        metrics.observe(endpoint, 200, total, result.queue_s, result.infer_s, result.batch_rows)
        start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(payload))),
                                  ("Server-Timing", server_timing(result.queue_s, result.infer_s, total))])
        return [payload]

    def _read_body(self, environ: dict) -> bytes:
        """The body, refused with 413 past max_body_bytes (declared or, when chunked, as read)."""
        stream = environ["wsgi.input"]
        try:
            length: int | None = max(0, int(environ.get("CONTENT_LENGTH") or ""))
        except ValueError:
            length = None
        if length is None and not environ.get("wsgi.input_terminated"):
            return b""  # no length and no framing from the server: no readable body (as Werkzeug)
        if length is not None and length > self.max_body:
            raise BadInput(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes", 413)
        body = stream.read(self.max_body + 1 if length is None else length) if length != 0 else b""
        if len(body) > self.max_body:
            raise BadInput(f"request body exceeds the limit of {self.max_body} bytes", 413)
        return body

    def _refuse(self, start_response: StartResponse, endpoint: str, started: float,
                exc: BadInput) -> list[bytes]:
        total = time.perf_counter() - started
        metrics.observe(endpoint, exc.status, total)
        return self._respond(start_response, exc.status, {"error": str(exc)},
                             [("Server-Timing", server_timing(0.0, 0.0, total))])

    def _respond(self, start_response: StartResponse, status: int, doc: dict, headers: Headers) -> list[bytes]:
        body = orjson.dumps(doc)
        start_response(self.status_lines[status],
                       [("Content-Type", JSON), ("Content-Length", str(len(body)))] + headers)
        return [body]
