"""A scriptable raw-socket HTTP server on 127.0.0.1 for client tests: each connection is handled by
a function that reads requests and writes whatever bytes the test wants (valid or not)."""
from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable

Handler = Callable[[socket.socket], None]
OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"  # keep-alive 200


def read_request(sock: socket.socket) -> bytes:
    """Read one request (headers + Content-Length body); b'' when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


class RawServer:
    def __init__(self, handler: Handler) -> None:
        outer = self
        self.connections = 0
        self.stopped = False
        self.open_sockets: set[socket.socket] = set()

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                outer.open_sockets.add(self.request)
                try:
                    handler(self.request)
                except OSError:
                    pass
                finally:
                    outer.open_sockets.discard(self.request)

        class _Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            request_queue_size = 128  # the default backlog of 5 drops SYNs when many clients connect at once

        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting and drop every open connection, like a server process that died (idempotent:
        a test may kill the server mid-run inside its `with` block)."""
        if self.stopped:
            return
        self.stopped = True
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        for sock in list(self.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def respond_forever(response: bytes, delay_s: float = 0.0) -> Handler:
    """Keep-alive server answering every request with the same bytes, each after `delay_s` (like a
    model's service time: closed-model users then wait on the server instead of spinning the
    generator's CPU, which the run's validity check would rightly call the bottleneck)."""
    def handle(sock: socket.socket) -> None:
        while read_request(sock):
            if delay_s:
                time.sleep(delay_s)
            sock.sendall(response)
    return handle


def dead_port() -> int:
    """A kernel-chosen port nobody listens on: bound, then closed (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HeldPort:
    """A kernel-chosen (or given) port held by a listening socket that never accepts; `taken` is
    False when the given port was already someone else's (it is taken either way)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.taken = True
        try:
            self.sock.bind(("127.0.0.1", port))
            self.sock.listen()
        except OSError:
            self.taken = False  # already in use by another process: still not free for the program
        self.port = int(self.sock.getsockname()[1]) if self.taken else port

    def __enter__(self) -> HeldPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
