"""The OpenAI stream reader: SSE framing as real servers vary it, token counting and timing, errors;
and the lean client handing it a chunked stream piece by piece as the pieces arrive."""
from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.engines.http_client import Connection, RequestFailed, request_bytes
from harness.engines.sse import CHUNKS, USAGE, OpenAIStream
from harness.results.samples import CLOSED, PROTOCOL
from tests.support.rawserver import RawServer, read_request


def chat_chunk(content: str | None = None, finish: str | None = None, reasoning: str | None = None) -> dict:
    delta = {k: v for k, v in (("content", content), ("reasoning_content", reasoning)) if v is not None}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage(completion: int, prompt: int) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def sse(*docs: dict | str, space: bool = True, crlf: bool = False, done: bool = True) -> bytes:
    end = "\r\n" if crlf else "\n"
    out = []
    for doc in docs:
        data = doc if isinstance(doc, str) else json.dumps(doc)
        out.append(f"data:{' ' if space else ''}{data}{end}{end}")
    if done:
        out.append(f"data: [DONE]{end}{end}")
    return "".join(out).encode()


STREAM = sse(chat_chunk(reasoning="hmm"), chat_chunk("Hel"), chat_chunk("lo"), chat_chunk("!", finish="stop"),
             usage(4, 7))


def read(body: bytes, pieces: list[bytes] | None = None, status: int = 200, streamed: bool = True) -> OpenAIStream:
    stream = OpenAIStream(streamed)
    stream.head(status)
    for piece in pieces if pieces is not None else [body]:
        stream.append(piece)
    stream.finish(time.monotonic())
    return stream


def test_a_stream_gives_its_tokens_usage_and_finish_reason() -> None:
    s = read(STREAM)
    assert (s.chunks, s.tokens, s.counted_by, s.input_tokens, s.finish_reason, s.done) == (4, 4, USAGE, 7, "stop", True)
    assert len(s.gaps) == 3  # between consecutive token chunks
    assert s.first_token is not None and s.first_content is not None and s.first_token <= s.first_content
    assert s.complete and s.message is None


def test_reasoning_is_a_first_token_but_not_first_content() -> None:
    stream = OpenAIStream()
    stream.head(200)
    stream.append(sse(chat_chunk(reasoning="thinking"), done=False))
    assert stream.first_token is not None and stream.first_content is None
    time.sleep(0.002)
    stream.append(sse(chat_chunk("answer", finish="stop")))
    assert stream.first_content is not None and stream.first_content > stream.first_token


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=30))
def test_the_same_answer_however_the_bytes_are_cut(cuts: list[int]) -> None:
    edges = [0, *sorted(set(cuts)), len(STREAM)]
    s = read(STREAM, [STREAM[a:b] for a, b in zip(edges, edges[1:])])
    assert (s.chunks, s.tokens, s.input_tokens, s.finish_reason, s.done, len(s.gaps)) == (4, 4, 7, "stop", True, 3)


def test_real_servers_variations_are_read_alike() -> None:
    """`data:` without a space, CRLF line ends, keep-alive comments, event/id lines, a usage chunk
    with empty choices and no [DONE]."""
    body = (b": keep-alive\r\n\r\nevent: message\r\nid: 1\r\n" + sse(chat_chunk("a"), space=False, crlf=True, done=False)
            + b": ping\r\n\r\n" + sse(chat_chunk("b", finish="length"), usage(2, 3), space=False, crlf=True, done=False))
    s = read(body)
    assert (s.chunks, s.tokens, s.finish_reason, s.done, s.complete) == (2, 2, "length", False, True)


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    s = read(b'data: {"choices":[{"text":"x","finish_reason":"length"}]}')  # completions, cut before "\n\n"
    assert (s.chunks, s.finish_reason) == (1, "length")


def test_without_usage_tokens_are_counted_by_chunks() -> None:
    s = read(sse(chat_chunk("a"), chat_chunk("b"), chat_chunk(finish="stop")))
    assert (s.tokens, s.counted_by, s.output_tokens) == (2, CHUNKS, None)


def test_a_cut_stream_is_not_complete() -> None:
    s = read(sse(chat_chunk("a"), chat_chunk("b"), done=False))
    assert not s.complete and s.tokens == 2


def test_data_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(RequestFailed) as failed:
        read(sse(chat_chunk("a"), "{not json"))
    assert failed.value.kind == PROTOCOL and "not JSON" in failed.value.detail


def test_an_error_inside_the_stream_keeps_its_message() -> None:
    s = read(sse(chat_chunk("a"), {"error": {"message": "out of KV cache", "type": "server_error"}}, done=False))
    assert s.message == "out of KV cache" and s.tokens == 1


def test_an_error_status_keeps_openais_message() -> None:
    body = json.dumps({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}).encode()
    assert read(body, status=400).message == "HTTP 400: max_tokens is too large"
    assert read(b"upstream went away", status=502).message == "HTTP 502: upstream went away"


def test_a_whole_completion_is_read_when_not_streamed() -> None:
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 9}}).encode()
    s = read(body, [body[:10], body[10:]], streamed=False)
    assert (s.tokens, s.input_tokens, s.finish_reason, s.complete) == (9, 5, "stop", True)
    assert s.first_token is not None and s.gaps == []


def test_the_client_hands_each_chunk_to_the_sink_as_it_arrives() -> None:
    """A chunked SSE answer sent 30 ms apart, token by token: the sink sees each as it comes (the
    gaps are the server's pauses), and a connection cut mid-stream is `closed` with the tokens kept."""
    pause = 0.03

    def handler(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for k in range(4):
            event = sse(chat_chunk(str(k), finish="stop" if k == 3 else None), done=False)
            sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            time.sleep(pause)
        if sock.getsockname()[1] == cut_port[0]:
            return  # closed without the last chunk
        done = sse(done=True)
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        read_request(sock)

    cut_port = [0]
    with RawServer(handler) as server:
        raw = request_bytes("POST", "127.0.0.1", server.port, "/v1/chat/completions", b"{}", {})
        conn = Connection("127.0.0.1", server.port)
        stream = OpenAIStream()
        response = conn.request(raw, 5.0, sink=stream)
        stream.finish(time.monotonic())
        assert response.status == 200 and response.body is None
        assert (stream.tokens, stream.done, stream.finish_reason) == (4, True, "stop")
        assert all(g >= pause * 0.8 for g in stream.gaps), stream.gaps
        assert stream.first_byte is not None and stream.first_token is not None
        assert stream.first_byte <= stream.first_token
        conn.close()

        cut_port[0] = server.port
        stream = OpenAIStream()
        with pytest.raises(RequestFailed) as failed:
            Connection("127.0.0.1", server.port).request(raw, 5.0, sink=stream)
        assert failed.value.kind == CLOSED and stream.tokens == 4


def test_a_server_that_does_not_stream_is_read_as_one_answer() -> None:
    """Asked for a stream, some servers answer one JSON completion: it is read whole, not as SSE."""
    body = json.dumps({"choices": [{"text": "hi", "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 2, "completion_tokens": 5}}).encode()
    s = read(body, [b"  " + body[:7], body[7:]], streamed=True)
    assert (s.tokens, s.counted_by, s.finish_reason, s.complete, s.events) == (5, USAGE, "length", True, 0)
