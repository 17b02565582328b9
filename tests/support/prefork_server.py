"""A server the harness did not start, shaped like gunicorn: a master that owns the listening
socket and forks a worker child that answers on it (JSON predictions; each answer also burns a
little CPU and the worker keeps some memory, so both show in the resources).

    python tests/support/prefork_server.py MARKER    # prints `listening PORT`, serves until SIGTERM

MARKER is a word put in the command line so a test can find the process by a regular expression.
The master ends its worker on SIGTERM; the worker also stops when the master is gone.
"""
from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time

BODY = b'{"predictions": [[0.5]]}'


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    kept: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        deadline = time.perf_counter() + 0.0005
        while time.perf_counter() < deadline:  # some CPU per request
            pass
        self.kept.append(b"x" * 4096)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def worker(listener: socket.socket, master: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener

    def watch() -> None:
        while os.getppid() == master:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    master = os.getpid()
    child = os.fork()
    if child == 0:
        worker(listener, master)
        return
    signal.signal(signal.SIGTERM, lambda *_: (os.kill(child, signal.SIGTERM), os._exit(0)))
    print(f"listening {listener.getsockname()[1]}", flush=True)
    os.waitpid(child, 0)


if __name__ == "__main__":
    main()
