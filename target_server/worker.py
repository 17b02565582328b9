"""gunicorn's gthread worker, except that a thread keeps its keep-alive connection while threads suffice.

After every response gunicorn's gthread hands a kept-alive connection back to the main thread:
a future callback, a pipe write that wakes the main thread, an epoll registration, then a new
dispatch to the pool when the next request arrives. With one GIL serving all of that and the app,
this traffic was ~40% of the GIL time per request (py-spy, `mlp` batched, 32 connections). Here
the thread that answered waits (GIL released) up to LINGER_S for the next request on the same
connection and serves it itself, but only while the worker has a thread for every open
connection, so no other connection waits for a thread meanwhile; otherwise, or once the wait
runs out, the connection takes gthread's usual way back to the poller.
"""
from __future__ import annotations

import select
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

LINGER_S = 0.01


class KeepAliveThreadWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        keepalive = super().handle(conn)
        # `is True`: other gunicorn versions return other things here; they just get plain gthread.
        while keepalive is True and self._next_request_arrives(conn):
            keepalive = super().handle(conn)
        return keepalive

    def _next_request_arrives(self, conn: Any) -> bool:
        if not self.alive or getattr(conn, "is_http2", False) or self.nr_conns > self.cfg.threads:
            return False
        try:
            pipelined = bool(conn.parser.unreader.buf.getvalue())  # gunicorn 27's internals
        except AttributeError:  # another gunicorn: hand the connection back, as plain gthread does
            return False
        if pipelined or _tls_pending(conn.sock):  # the next request is already read (or decrypted)
            return True
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN)
        return bool(poller.poll(LINGER_S * 1000))


def _tls_pending(sock: Any) -> bool:
    """Bytes TLS already decrypted are in the SSL object, not the socket: poll would not see them."""
    pending = getattr(sock, "pending", None)
    return bool(pending()) if pending is not None else False
