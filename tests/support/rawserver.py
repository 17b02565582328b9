"""A scriptable raw-socket HTTP server on 127.0.0.1 for client tests: each connection is handled by
a function that reads requests and writes whatever bytes the test wants (valid or not)."""
from __future__ import annotations

import socket
import socketserver
import threading
from typing import Callable

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

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "RawServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop accepting and drop every open connection, like a server process that died."""
        self.server.shutdown()
        self.server.server_close()
        for sock in list(self.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def respond_forever(response: bytes) -> Handler:
    """Keep-alive server answering every request with the same bytes."""
    def handle(sock: socket.socket) -> None:
        while read_request(sock):
            sock.sendall(response)
    return handle
