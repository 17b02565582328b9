"""Reading an OpenAI-compatible response as it arrives: server-sent events, tokens and their times.

`OpenAIStream` is the lean client's body sink for one request (`Connection.request(sink=...)`):
each received piece is handed to `append`, stamped with the monotonic clock once, split into
SSE lines and events, and each event's JSON read for what matters to timing: a token (any
non-empty `delta.content`, `delta.reasoning_content`/`reasoning` or completions `text`), the
first content token, `finish_reason`, the `usage` chunk (often with empty `choices`) and an
`error` object. Real servers differ: `data:` with or without a space, `\\r\\n` line ends,
`:` keep-alive comments, `event:`/`id:` lines and a missing `[DONE]` are all accepted. Data
that is not JSON is a `protocol` error, raised from `append` so the request ends at once.

A response with an HTTP error status, or a non-streamed completion (`stream: false`, or a JSON
answer from a server that does not stream), is kept whole (up to KEEP_BYTES) and read at the end.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from harness.engines.http_client import RequestFailed
from harness.results.samples import PROTOCOL

KEEP_BYTES = 1 << 20  # a non-streamed body or an error body is kept up to this size
MAX_PENDING = 1 << 20  # an SSE line (or event) longer than this is a protocol error
USAGE, CHUNKS = "usage", "chunks"  # where a request's output token count came from


class OpenAIStream:
    """Everything one request's stream says about its tokens, timed on time.monotonic()."""

    __slots__ = ("streamed", "status", "first_byte", "first_token", "first_content", "last_token", "chunks",
                 "gaps", "output_tokens", "input_tokens", "finish_reason", "done", "message", "events",
                 "_line", "_data", "_kept", "_fresh")

    def __init__(self, streamed: bool = True) -> None:
        self.streamed = streamed  # False: one JSON body (stream: false), read by finish()
        self.status = 0
        self.first_byte: float | None = None  # the response's first byte (set by the client)
        self.first_token: float | None = None  # the first chunk carrying any token, reasoning included
        self.first_content: float | None = None  # the first chunk carrying content proper
        self.last_token: float | None = None
        self.chunks = 0  # chunks carrying tokens
        self.gaps: list[float] = []  # seconds between consecutive token chunks
        self.output_tokens: int | None = None  # from usage (None: count the chunks instead)
        self.input_tokens: int | None = None
        self.finish_reason: str | None = None
        self.done = False  # `data: [DONE]` seen
        self.message: str | None = None  # an error the server sent (HTTP error body or error event)
        self.events = 0
        self._line = b""  # an incomplete line carried to the next piece
        self._data: list[bytes] = []  # the data lines of the event being read
        self._kept: list[bytes] | None = None  # the whole body (error status or non-streamed)
        self._fresh = True  # no body byte seen yet

    # the client's side: the sink protocol (harness.engines.http_client.BodySink) ----------------
    def head(self, status: int) -> None:
        self.status = status
        if status >= 400 or not self.streamed:
            self._kept = []

    def append(self, piece: bytes) -> None:
        kept = self._kept
        if self._fresh:
            self._fresh = False
            if kept is None and piece.lstrip()[:1] == b"{":  # one JSON answer although a stream was asked for
                kept = self._kept = []
        if kept is not None:
            if sum(map(len, kept)) < KEEP_BYTES:
                kept.append(piece)
            return
        now = time.monotonic()
        data = self._line + piece if self._line else piece
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            self._field(data[start:nl], now)
            start = nl + 1
        rest = data[start:]
        if len(rest) > MAX_PENDING:
            raise RequestFailed(PROTOCOL, f"an SSE line longer than {MAX_PENDING} bytes")
        self._line = rest

    def _field(self, line: bytes, now: float) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:  # a blank line ends the event
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                self._event(data, now)
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # comments (`: ping`), event:, id: and retry: lines say nothing about tokens

    def _event(self, data: bytes, now: float) -> None:
        self.events += 1
        if data.strip() == b"[DONE]":
            self.done = True
            return
        self._chunk(_json_object(data, "SSE data"), now)

    def _chunk(self, doc: dict[str, Any], now: float) -> None:
        """One parsed chunk (or a whole non-streamed completion, with `now` its arrival)."""
        error = doc.get("error")
        if error is not None:
            self.message = _error_message(error)
            return
        usage = doc.get("usage")
        if isinstance(usage, dict):
            out, inp = usage.get("completion_tokens"), usage.get("prompt_tokens")
            if isinstance(out, int):
                self.output_tokens = out
            if isinstance(inp, int):
                self.input_tokens = inp
        choices = doc.get("choices")
        if not choices or not isinstance(choices, list):
            return
        choice = choices[0]
        if not isinstance(choice, dict):
            raise RequestFailed(PROTOCOL, f"a choice that is not an object: {str(choice)[:80]}")
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message")  # a non-streamed chat completion
        content: Any = None
        reasoning: Any = None
        if isinstance(delta, dict):
            content = delta.get("content")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        else:
            content = choice.get("text")  # completions
        if content or reasoning:
            if self.first_token is None:
                self.first_token = now
            else:
                self.gaps.append(now - self.last_token)  # type: ignore[operator]
            if content and self.first_content is None:
                self.first_content = now
            self.last_token = now
            self.chunks += 1
        reason = choice.get("finish_reason")
        if reason is not None:
            self.finish_reason = str(reason)

    # the engine's side ---------------------------------------------------------------------------
    def finish(self, end: float) -> str | None:
        """Read what is left once the response ended (at `end`); returns the server's error message
        when it sent one."""
        if self._kept is not None:
            body = b"".join(self._kept)
            if self.status >= 400:
                self.message = _body_message(body, self.status)
                return self.message
            self._chunk(_json_object(body, "a completion"), end)
            return self.message
        if self._line:  # the last line had no line end
            self._field(self._line, end)
            self._line = b""
        if self._data:  # the last event had no blank line after it
            self._field(b"", end)
        return self.message

    @property
    def complete(self) -> bool:
        """The stream said it was over ([DONE] or a finish_reason); a stream cut short says neither."""
        return self.done or self.finish_reason is not None or not self.streamed

    @property
    def tokens(self) -> int:
        """Output tokens: the usage count when the server sent one, else the token chunks."""
        return self.output_tokens if self.output_tokens is not None else self.chunks

    @property
    def counted_by(self) -> str:
        return USAGE if self.output_tokens is not None else CHUNKS


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """`data` as a JSON object; anything else is a protocol error naming `what` it was."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise RequestFailed(PROTOCOL, f"{what} is not JSON: {data[:80]!r}") from None
    if not isinstance(doc, dict):
        raise RequestFailed(PROTOCOL, f"{what} is not a JSON object: {data[:80]!r}")
    return doc


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        text = error.get("message") or error.get("type") or orjson.dumps(error).decode()
        return str(text)[:300]
    return str(error)[:300]


def _body_message(body: bytes, status: int) -> str:
    """The message of an HTTP error body: OpenAI's `{"error": {"message": ...}}`, else its text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if isinstance(doc, dict):
        if "error" in doc:
            return f"HTTP {status}: {_error_message(doc['error'])}"
        if isinstance(doc.get("message"), str):
            return f"HTTP {status}: {doc['message'][:300]}"
        if isinstance(doc.get("detail"), str):
            return f"HTTP {status}: {doc['detail'][:300]}"
    return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
