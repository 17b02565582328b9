"""An OpenAI-compatible streaming server whose token timing is known: a fixed TTFT and ITL.

    python benchmarks/stream_server.py --ttft-ms 50 --itl-ms 10 [--slots N] [--port 0] [--fault MODE]
                                       [--certfile F --keyfile F]

POST /v1/chat/completions and /v1/completions answer `max_tokens` (or `max_completion_tokens`)
tokens (default 16): with
`stream: true` as server-sent events (one token per event, chunked, then a `usage` chunk with
empty choices and `data: [DONE]`), otherwise one JSON completion when the last token is due.
Token k of a request read at t is due at t + TTFT + k * ITL (an absolute schedule, so a late
send does not push the rest back). With both at 0 the whole stream goes out in one write (built
once), so a client's ceiling measured against it is the client's, not this server's. GET /v1/models lists one model, `fixed-timing`.

Under load the server can fall behind that schedule, so the truth is what it did, not what it was
asked: GET /stats returns the percentiles of its own record (time from a request read to its
first token written, and every gap between consecutive tokens written), taken with
time.monotonic() as each token is written. A client's figures are checked
against those (each stamp is taken just before the write, so no client can see a token earlier).
A request sent with an `X-Request-ID` header has its token write times kept under
that id (GET /stats/writes: {id: [monotonic seconds, ...]}, this machine's clock), so a client
can pair each of its requests with what the server did for it.

Fault modes, for the harness's tests (every request of the server behaves so):
  cut          close the connection after half the tokens, without ending the chunked body
  malformed    an event whose data is not JSON after the first token
  hang         send one token, then nothing (the client's timeout must end it)
  error-status answer 400 with an OpenAI error body
  error-event  an `error` object inside the stream after the first token
  quirky       `data:` without a space, CRLF line ends, `: keep-alive` comments, no [DONE]
  no-usage     no usage chunk (the client counts tokens by chunks)
  close        HTTP/1.0-style: no chunking, the body ends when the connection closes

One asyncio loop, plain sockets; prints `stream_server listening on http(s)://HOST:PORT`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import deque
from typing import Any

import numpy as np

MODEL = "fixed-timing"
FAULTS = ("cut", "malformed", "hang", "error-status", "error-event", "quirky", "no-usage", "close")


class Record:
    """The server's own account of what it sent, bounded in memory."""

    def __init__(self) -> None:
        self.ttft: deque[float] = deque(maxlen=1_000_000)  # s, request read -> first token written
        self.gaps: deque[float] = deque(maxlen=5_000_000)  # s between consecutive tokens written
        self.late: deque[float] = deque(maxlen=5_000_000)  # s each token was written after it was due
        self.requests = 0
        self.tokens = 0
        # X-Request-ID -> when each of its tokens was written (time.monotonic(), this machine's clock)
        self.writes: dict[str, list[float]] = {}

    def stats(self) -> dict[str, Any]:
        def pct(values: deque[float]) -> dict[str, float | None]:
            if not values:
                return {k: None for k in ("p50", "p90", "p99", "mean")}
            arr = np.fromiter(values, dtype=np.float64) * 1000.0
            p50, p90, p99 = np.percentile(arr, [50, 90, 99])
            return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4),
                    "mean": round(float(arr.mean()), 4)}

        return {"requests": self.requests, "tokens": self.tokens, "ttft_ms": pct(self.ttft),
                "itl_ms": pct(self.gaps), "late_ms": pct(self.late)}


class StreamServer:
    def __init__(self, ttft: float, itl: float, fault: str | None = None, slots: int = 0) -> None:
        self.ttft = ttft
        self.itl = itl
        self.fault = fault
        self.slots = asyncio.Semaphore(slots) if slots else None  # at most this many answers at once
        self.record = Record()
        self._bursts: dict[tuple[bool, int, int], bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                read_at = time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                length = 0
                request_id = None
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                    elif name.strip().lower() == "x-request-id":
                        request_id = value.strip()
                body = await reader.readexactly(length) if length else b""
                read_at = time.monotonic()
                if not await self.answer(method, path, body, read_at, writer, request_id):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def answer(self, method: str, path: str, body: bytes, read_at: float,
                     writer: asyncio.StreamWriter, request_id: str | None = None) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        if method == "GET" and path == "/health":
            return await self.json(writer, 200, {"status": "ok"})
        if method == "GET" and path == "/v1/models":
            return await self.json(writer, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        if method == "GET" and path == "/stats":
            return await self.json(writer, 200, self.record.stats())
        if method == "GET" and path == "/stats/writes":
            return await self.json(writer, 200, self.record.writes)
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            return await self.json(writer, 404, {"error": {"message": f"no route {method} {path}",
                                                           "type": "not_found_error"}})
        try:
            doc = json.loads(body)
            tokens = int(doc.get("max_tokens") or doc.get("max_completion_tokens") or 16)
        except (ValueError, TypeError, AttributeError):
            return await self.json(writer, 400, {"error": {"message": "the body is not a JSON object",
                                                           "type": "invalid_request_error"}})
        if self.fault == "error-status":
            return await self.json(writer, 400, {"error": {"message": "max_tokens is too large for this model",
                                                           "type": "invalid_request_error", "param": "max_tokens",
                                                           "code": None}})
        chat = path.endswith("chat/completions")
        prompt = doc.get("prompt") if not chat else " ".join(str(m.get("content", "")) for m in doc.get("messages", [])
                                                                if isinstance(m, dict))
        prompt_tokens = len(str(prompt or "").split())
        self.record.requests += 1
        if self.slots is None:
            return await self.respond(writer, doc, chat, tokens, prompt_tokens, read_at, request_id)
        async with self.slots:  # a request waiting for a slot has its TTFT grow by the wait
            return await self.respond(writer, doc, chat, tokens, prompt_tokens, read_at, request_id)

    async def respond(self, writer: asyncio.StreamWriter, doc: dict[str, Any], chat: bool, tokens: int,
                      prompt_tokens: int, read_at: float, request_id: str | None) -> bool:
        if self.slots is not None:
            read_at, queued = time.monotonic(), read_at  # the schedule starts once a slot is free ...
        else:
            queued = read_at
        if not doc.get("stream"):
            return await self.whole(writer, chat, tokens, prompt_tokens, read_at)
        return await self.stream(writer, chat, tokens, prompt_tokens, read_at, request_id, queued)

    async def json(self, writer: asyncio.StreamWriter, status: int, doc: Any) -> bool:
        data = json.dumps(doc).encode()
        writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()
        return True

    async def whole(self, writer: asyncio.StreamWriter, chat: bool, tokens: int, prompt_tokens: int,
                    read_at: float) -> bool:
        await asyncio.sleep(max(0.0, read_at + self.ttft + (tokens - 1) * self.itl - time.monotonic()))
        text = "tok " * tokens
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                                  if chat else {"index": 0, "text": text, "finish_reason": "length"})
        return await self.json(writer, 200, {"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                                             "model": MODEL, "choices": [choice],
                                             "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                                       "total_tokens": prompt_tokens + tokens}})

    async def stream(self, writer: asyncio.StreamWriter, chat: bool, tokens: int, prompt_tokens: int,
                     read_at: float, request_id: str | None = None, queued: float | None = None) -> bool:
        fault = self.fault
        chunked = fault != "close"
        quirky = fault == "quirky"
        end = b"\r\n\r\n" if quirky else b"\n\n"
        prefix = b"data:" if quirky else b"data: "
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Connection: close\r\n\r\n"))
        await writer.drain()

        async def send(payload: bytes) -> float:
            """Write, and return the time just before the bytes went to the kernel: a client cannot
            have them earlier, so the record is a lower bound of each token's arrival."""
            data = b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload
            sent = time.monotonic()
            writer.write(data)
            await writer.drain()
            return sent

        def event(doc: Any) -> bytes:
            return prefix + json.dumps(doc, separators=(",", ":")).encode() + end

        def token_doc(k: int, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = ({"index": 0, "delta": {"content": "tok "}, "finish_reason": finish} if chat
                                      else {"index": 0, "text": "tok ", "finish_reason": finish})
            return {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                    "model": MODEL, "choices": [choice]}

        if self.ttft == 0 and self.itl == 0 and fault is None and chunked:  # a ceiling test: all at once
            writer.write(self.burst(chat, tokens, prompt_tokens))
            await writer.drain()
            self.record.tokens += tokens
            return True
        last = None
        writes: list[float] = []
        if request_id is not None and len(self.record.writes) < 1_000_000:
            self.record.writes[request_id] = writes
        for k in range(tokens):
            due = read_at + self.ttft + k * self.itl
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if k == 1 and fault == "malformed":
                await send(prefix + b"{this is not json" + end)
                return True
            if k == 1 and fault == "error-event":
                await send(event({"error": {"message": "the engine ran out of KV cache", "type": "server_error"}}))
                await send(b"")
                return True
            if k == 1 and fault == "hang":
                await asyncio.sleep(3600)
            if fault == "cut" and k == tokens // 2:
                return False
            if quirky and k % 2:
                await send(b": keep-alive" + end)
            now = await send(event(token_doc(k, "length" if k == tokens - 1 else None)))
            writes.append(now)
            record = self.record
            record.tokens += 1
            record.late.append(now - due)
            if last is None:
                record.ttft.append(now - (read_at if queued is None else queued))  # ... the wait counts
            else:
                record.gaps.append(now - last)
            last = now
        if fault != "no-usage":
            await send(event({"id": "cmpl-1", "object": "chat.completion.chunk", "model": MODEL, "choices": [],
                              "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                        "total_tokens": prompt_tokens + tokens}}))
        if not quirky:
            await send(prefix + b"[DONE]" + end)
        if chunked:
            await send(b"")
            return True
        return False


    def burst(self, chat: bool, tokens: int, prompt_tokens: int) -> bytes:
        """The whole chunked stream of an answer, built once per shape: with no delay to keep, the
        server's cost per request is one write, so a client's ceiling is the client's own."""
        key = (chat, tokens, prompt_tokens)
        if key not in self._bursts:
            kind = "chat.completion.chunk" if chat else "text_completion"
            docs = [{"id": "cmpl-1", "object": kind, "model": MODEL,
                     "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None} if chat
                                 else {"index": 0, "text": "tok ", "finish_reason": None}]} for _ in range(tokens)]
            docs[-1]["choices"][0]["finish_reason"] = "length"
            docs.append({"id": "cmpl-1", "object": kind, "model": MODEL, "choices": [],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                   "total_tokens": prompt_tokens + tokens}})
            events = [b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n" for d in docs]
            events.append(b"data: [DONE]\n\n")
            self._bursts[key] = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
        return self._bursts[key]


async def serve(args: argparse.Namespace) -> None:
    server = StreamServer(args.ttft_ms / 1000.0, args.itl_ms / 1000.0, args.fault, args.slots)
    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    listener = await asyncio.start_server(server.handle, args.host, args.port, ssl=context, backlog=4096,
                                          limit=1 << 20)
    port = listener.sockets[0].getsockname()[1]
    print(f"stream_server listening on {'https' if context else 'http'}://{args.host}:{port}", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="time to the first token (ms)")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="time between tokens (ms)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=0,
                        help="answer at most N requests at once, the rest wait (0: no limit): TTFT grows "
                             "with the queue, as on a server at its batch limit")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="misbehave on every request (tests)")
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (PEM) ...")
    parser.add_argument("--keyfile", help="... and this key")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
