"""Request IDs and the access log: an incoming X-Request-ID is echoed on the response and logged.

A load generator that sends one id per request can then join its rows with this server's log.
The middleware costs one dict lookup per request when no id is sent and the log is off, so the
benchmarks' hot path stays as it was. Both web layers use it: `RequestIdWSGI` for Flask,
`RequestIdASGI` for the FastAPI twin, with the same line format (`access_line`).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

HEADER = "X-Request-ID"
WSGI_KEY = "HTTP_X_REQUEST_ID"
ASGI_KEY = b"x-request-id"

LOGGER = logging.getLogger("target_server.access")


def access_logger() -> logging.Logger:
    """The access log: plain lines on stderr (the server's log), set up once per worker."""
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False
    return LOGGER


def access_line(client: str, method: str, target: str, status: int, length: str, seconds: float,
                request_id: str | None) -> str:
    """`127.0.0.1 "POST /predict" 200 25 0.412ms rid="run-0-17"` (rid="-" when none was sent)."""
    rid = "-" if request_id is None else '"' + request_id.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f'{client} "{method} {target}" {status} {length} {seconds * 1e3:.3f}ms rid={rid}'


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


class RequestIdWSGI:
    """WSGI middleware: echo X-Request-ID; with `log`, one access line per request."""

    def __init__(self, app: WSGIApp, *, log: bool) -> None:
        self.app = app
        self.logger = access_logger() if log else None

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        rid = environ.get(WSGI_KEY)
        if rid is None and self.logger is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        seen: list[Any] = []

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if rid is not None:
                headers = [*headers, (HEADER, rid)]
            seen[:] = [status, headers]
            return start_response(status, headers, exc_info)

        body = self.app(environ, respond)
        if self.logger is not None and seen:
            status, headers = seen
            length = next((v for k, v in headers if k.lower() == "content-length"), "-")
            query = environ.get("QUERY_STRING")
            target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
            self.logger.info(access_line(environ.get("REMOTE_ADDR", "-"), environ["REQUEST_METHOD"], target,
                                         int(status[:3]), length, time.perf_counter() - started, rid))
        return body


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdASGI:
    """ASGI middleware doing the same as RequestIdWSGI for the FastAPI twin."""

    def __init__(self, app: ASGIApp, *, log: bool) -> None:
        self.app = app
        self.logger = access_logger() if log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == ASGI_KEY), None)
        if raw is None and self.logger is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {}

        async def respond(message: Message) -> None:
            if message["type"] == "http.response.start":
                if raw is not None:
                    message["headers"] = [*message.get("headers", ()), (ASGI_KEY, raw)]
                seen["status"] = message["status"]
                seen["length"] = next((v.decode("latin-1") for k, v in message.get("headers", ())
                                       if k.lower() == b"content-length"), "-")
            await send(message)

        await self.app(scope, receive, respond)
        if self.logger is not None and seen:
            client = scope.get("client")
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            self.logger.info(access_line(client[0] if client else "-", scope["method"], target, seen["status"],
                                         seen["length"], time.perf_counter() - started,
                                         None if raw is None else raw.decode("latin-1")))
