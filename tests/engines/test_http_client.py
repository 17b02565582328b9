"""The lean HTTP/1.1 client against a scripted local server: framing, keep-alive, errors."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from harness.engines import http_client as hc
from harness.engines.http_client import request_bytes
from harness.results import samples
from harness.results.samples import parse_server_timing
from tests.support.cli import wait_until
from tests.support.rawserver import RawServer, read_request, respond_forever

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"predictions\":1}"


def raw_get(port: int) -> bytes:
    return request_bytes("POST", "127.0.0.1", port, "/predict", b'{"inputs":[[1,2,3]]}', {})


def test_keep_alive_reuses_one_connection() -> None:
    with RawServer(respond_forever(OK)) as server:
        conn = hc.Connection("127.0.0.1", server.port)
        for _ in range(50):
            response = conn.request(raw_get(server.port), 2.0)
            assert (response.status, response.body_bytes, response.keep_alive) == (200, 17, True)
        conn.close()
        assert server.connections == 1


def test_connection_close_reconnects_each_time() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    def handle(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(close)

    with RawServer(handle) as server:
        conn = hc.Connection("127.0.0.1", server.port)
        for _ in range(5):
            response = conn.request(raw_get(server.port), 2.0)
            assert response.status == 200 and not response.keep_alive
        assert server.connections == 5


def test_http10_without_keep_alive_reads_until_close() -> None:
    def handle(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        sock.sendall(b"x" * 100_000)
        sock.shutdown(socket.SHUT_WR)

    with RawServer(handle) as server:
        response = hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 2.0)
        assert response.body_bytes == 100_000 and not response.keep_alive


def test_chunked_body_with_extensions_and_trailers() -> None:
    body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n"
    response_bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    def handle(sock: socket.socket) -> None:
        while read_request(sock):
            for i in range(0, len(response_bytes), 7):  # trickle in small pieces
                sock.sendall(response_bytes[i:i + 7])

    with RawServer(handle) as server:
        conn = hc.Connection("127.0.0.1", server.port)
        for _ in range(3):
            response = conn.request(raw_get(server.port), 2.0)
            assert response.status == 200 and response.body_bytes == 4 + 6 + 14
        assert server.connections == 1


def test_stale_keep_alive_connection_is_retried_once() -> None:
    def handle(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(OK)  # answer one request, then close as an idle-timeout would
        sock.close()

    with RawServer(handle) as server:
        conn = hc.Connection("127.0.0.1", server.port)
        assert conn.request(raw_get(server.port), 2.0).status == 200
        wait_until(lambda: not server.open_sockets, 10, "the server to close the connection")
        assert conn.request(raw_get(server.port), 2.0).status == 200
        assert server.connections == 2


def test_timeout_fires_on_a_hung_server() -> None:
    """The server answers only when the test lets it (after the client gave up): the request can
    only end as a timeout, and not before its 0.3 s."""
    release = threading.Event()

    def handle(sock: socket.socket) -> None:
        read_request(sock)
        release.wait(30)
        sock.sendall(OK)

    with RawServer(handle) as server:
        started = time.monotonic()
        try:
            with pytest.raises(hc.RequestFailed) as info:
                hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 0.3)
        finally:
            release.set()
        assert info.value.kind == hc.TIMEOUT
        assert time.monotonic() - started >= 0.3


def test_trickled_response_obeys_the_total_deadline() -> None:
    """A byte every 50 ms keeps any per-read timeout from firing, and the whole response takes
    ~4.5 s: only a deadline on the whole request (2 s) can end it, as a timeout."""
    def handle(sock: socket.socket) -> None:
        read_request(sock)
        for byte in OK:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)

    with RawServer(handle) as server:
        started = time.monotonic()
        with pytest.raises(hc.RequestFailed) as info:
            hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 2.0)
        assert info.value.kind == hc.TIMEOUT and time.monotonic() - started >= 2.0


@pytest.mark.parametrize("reply,kind", [
    (b"HTPT/1.1 200 OK\r\n\r\n", samples.PROTOCOL),
    (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", samples.PROTOCOL),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", samples.PROTOCOL),
    (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", samples.PROTOCOL),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", samples.PROTOCOL),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", samples.CLOSED),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", samples.TOO_LARGE),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000, samples.PROTOCOL),
    (b"", samples.CLOSED),
])
def test_garbage_is_classified(reply: bytes, kind: str) -> None:
    def handle(sock: socket.socket) -> None:
        read_request(sock)
        if reply:
            sock.sendall(reply)
        sock.close()

    with RawServer(handle) as server:
        with pytest.raises(hc.RequestFailed) as info:
            hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 2.0)
        assert info.value.kind == kind


def test_connection_reset_is_classified() -> None:
    def handle(sock: socket.socket) -> None:
        read_request(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST

    with RawServer(handle) as server:
        with pytest.raises(hc.RequestFailed) as info:
            hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 2.0)
        assert info.value.kind in (samples.RESET, samples.CLOSED)


def test_connect_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(hc.RequestFailed) as info:
        hc.Connection("127.0.0.1", port).request(raw_get(port), 1.0)
    assert info.value.kind == samples.CONNECT


def test_server_timing_is_read() -> None:
    reply = (b"HTTP/1.1 200 OK\r\nServer-Timing: queue;dur=1.5, infer;dur=0.25, total;dur=2\r\n"
             b"Content-Length: 0\r\n\r\n")
    with RawServer(respond_forever(reply)) as server:
        response = hc.Connection("127.0.0.1", server.port).request(raw_get(server.port), 2.0)
    assert parse_server_timing(response.server_timing) == (1.5, 0.25, 2.0)
    assert parse_server_timing(b"infer;dur=3") == (0.0, 3.0, None)
    assert parse_server_timing(b"cache;desc=hit") is None


def test_request_bytes_are_well_formed() -> None:
    raw = request_bytes("POST", "127.0.0.1", 8000, "/predict", b"{}", {"Authorization": "Bearer x"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000")
    assert b"Content-Length: 2" in head and b"Authorization: Bearer x" in head and body == b"{}"
