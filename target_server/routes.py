"""The inference routes as a bare WSGI app in front of Flask: the hot path of every benchmark.

Flask's per-request machinery (app and request contexts, URL adapter, session, signals, Request
and Response objects) cost more CPU than the parse and the `linear` forward together: `noop`
/predict took 90 µs in-process through Flask and 15 µs here, and 0.36 against 0.24 ms of server
CPU per request under wrk; with one gthread worker all of it runs under one GIL. So the inference
POSTs (/predict, /v1/models/<name>:predict, /v2/models/<name>/infer) are answered here straight
from the WSGI environ by the shared service (service.py); every other request (other paths,
other methods on these paths) goes on to Flask.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from werkzeug.http import HTTP_STATUS_CODES

from target_server.payloads import BadInput
from target_server.service import InferenceService, Reply, RequestHead, Route, inference_route

StartResponse = Callable[..., object]
WSGIApp = Callable[..., Iterable[bytes]]  # (environ, start_response) -> body


class InferenceRoutes:
    """WSGI middleware answering the inference POSTs itself and passing everything else to Flask."""

    def __init__(self, fallback: WSGIApp, service: InferenceService) -> None:
        self.fallback = fallback
        self.service = service
        self.status_lines = {code: f"{code} {reason}" for code, reason in HTTP_STATUS_CODES.items()}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            route = inference_route(environ.get("PATH_INFO", ""))
            if route is not None:
                return self._serve(environ, start_response, route)
        return self.fallback(environ, start_response)

    def _serve(self, environ: dict, start_response: StartResponse, route: Route) -> list[bytes]:
        head = RequestHead(environ.get("CONTENT_TYPE"), environ.get("HTTP_AUTHORIZATION"),
                           environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"), environ.get("HTTP_CONTENT_ENCODING"))
        reply = self.service.handle(route, head, lambda: self._read_body(environ))
        return self._send(start_response, reply)

    def _read_body(self, environ: dict) -> bytes:
        """The body, refused with 413 past max_body_bytes (declared or, when chunked, as read)."""
        service = self.service
        length = service.declared_length(environ.get("CONTENT_LENGTH"))
        if length is None and not environ.get("wsgi.input_terminated"):
            if environ.get("CONTENT_LENGTH"):
                raise BadInput(f"Content-Length must be a number of bytes, got {environ['CONTENT_LENGTH']!r}")
            return b""  # no length and no framing from the server: no readable body (as Werkzeug)
        stream = environ["wsgi.input"]
        body = stream.read(service.max_body + 1 if length is None else length) if length != 0 else b""
        if len(body) > service.max_body:
            raise service.too_large()
        return body

    def _send(self, start_response: StartResponse, reply: Reply) -> list[bytes]:
        start_response(self.status_lines[reply.status], reply.headers)
        return [reply.body]
