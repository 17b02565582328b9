"""A tiny HTTP/1.1 server whose true latency is known: a fixed delay, optionally periodic freezes.

    python benchmarks/delay_server.py --delay-ms 10 [--freeze-s 1 --period-s 5] [--port 0]

Every request (any method, any path but /stats) is answered `delay` after it was read completely.
With a freeze, the server stalls for `freeze` seconds in every `period`: an answer falling due
during a stall leaves when the stall ends, which is what a stop-the-world pause does to a real
server. GET /stats returns {"count", "p50_ms", "mean_ms"} of the server's own handling times (read
to written, measured here), so a client's figures can be checked against the truth.

One thread per connection, keep-alive, plain sockets: nothing in here costs more than tens of
microseconds per request, so the delay is the latency. It prints
`delay_server listening on http://HOST:PORT` once it accepts connections.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections import deque

BODY = b'{"predictions": [[0.0]]}'


class DelayServer:
    def __init__(self, delay: float, freeze: float = 0.0, period: float = 5.0) -> None:
        self.delay = delay
        self.freeze = freeze
        self.period = period
        # stalls occupy the last `freeze` seconds of each period, so the server starts responsive
        self.origin = time.monotonic()
        self.handled: deque[float] = deque(maxlen=200_000)

    def due(self, read_at: float) -> float:
        """When the answer to a request read at `read_at` leaves."""
        due = read_at + self.delay
        if self.freeze > 0:
            phase = (due - self.origin) % self.period
            stall_from = self.period - self.freeze
            if phase >= stall_from:
                due += self.period - phase  # held until the stall ends
        return due

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.connection, args=(conn,), daemon=True).start()

    def connection(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                head, buf = buf[:end], buf[end + 4:]
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                read_at = time.monotonic()
                if head.split(b" ", 2)[1:2] == [b"/stats"]:
                    body = self.stats()
                    conn.sendall(self.response(body, close))
                else:
                    wait = self.due(read_at) - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    conn.sendall(self.response(BODY, close))
                    self.handled.append(time.monotonic() - read_at)
                if close:
                    return
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def response(body: bytes, close: bool) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: %s\r\n\r\n" % (len(body), b"close" if close else b"keep-alive")) + body

    def stats(self) -> bytes:
        times = list(self.handled)
        doc = {"count": len(times),
               "p50_ms": statistics.median(times) * 1000 if times else None,
               "mean_ms": statistics.fmean(times) * 1000 if times else None}
        return json.dumps(doc).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="answer this long after a request is read")
    parser.add_argument("--freeze-s", type=float, default=0.0, help="stall this long in every period (0: never)")
    parser.add_argument("--period-s", type=float, default=5.0, help="length of one stall cycle")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.freeze_s < args.period_s:
        parser.error("--freeze-s must be at least 0 and shorter than --period-s")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1024)
    server = DelayServer(args.delay_ms / 1000.0, args.freeze_s, args.period_s)
    host, port = listener.getsockname()[:2]
    print(f"delay_server listening on http://{host}:{port}", flush=True)
    try:
        server.serve(listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
