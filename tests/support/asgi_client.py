"""An in-process client for the FastAPI twin with the Flask test client's surface, so the same
unit tests (hostile corpus, property test) drive both web layers.

The app runs on one event loop in a background thread for the client's life (as in a uvicorn
worker), so requests from several test threads at once share it the way real connections do.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from werkzeug.datastructures import Headers


class AsgiResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
        self.data = body

    @property
    def mimetype(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    def get_json(self) -> Any:
        return orjson.loads(self.data) if self.mimetype == "application/json" else None

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self.data.decode("utf-8", "replace") if as_text else self.data


class AsgiClient:
    def __init__(self, app: Any, strategy: Any = None) -> None:
        self.app = app
        self.strategy = strategy  # the app's inference strategy, for tests that reach into it
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="asgi-client", daemon=True).start()

    def open(self, method: str, path: str, *, data: bytes | str = b"", json: Any = None,
             content_type: str | None = None, headers: dict[str, str] | None = None) -> AsgiResponse:
        if json is not None:
            data, content_type = orjson.dumps(json), content_type or "application/json"
        body = data.encode() if isinstance(data, str) else data
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        if content_type is not None:
            raw.append((b"content-type", content_type.encode("latin-1")))
        if body or method in ("POST", "PUT"):
            raw.append((b"content-length", str(len(body)).encode()))
        path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": raw, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
        future = asyncio.run_coroutine_threadsafe(self._call(scope, body), self.loop)
        return future.result(timeout=60)

    async def _call(self, scope: dict, body: bytes) -> AsgiResponse:
        sent = False
        start: dict = {}
        chunks: list[bytes] = []

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects early
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return AsgiResponse(start["status"], list(start.get("headers", [])), b"".join(chunks))

    def get(self, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open("PUT", path, **kwargs)
