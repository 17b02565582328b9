"""`python -m target_server`: start the bundled model server from flags (or TARGET_SERVER_* variables)."""
from __future__ import annotations

import argparse
import errno
import socket
import sys

from target_server.config import (LOCK_MODES, MODEL_NAMES, WORKER_CLASSES, ServerConfig, WeightsError,
                                  env_defaults)

EXIT_BAD_USAGE = 2
EXIT_PORT_IN_USE = 3


def port_in_use(host: str, port: int) -> str | None:
    """Say so at once when the address is taken (gunicorn would retry for 5 s, then log a bare error).

    Probed as gunicorn binds: IPv6 for an IPv6 literal, IPv4 otherwise, with SO_REUSEADDR."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use (pick another --port, or --port 0 for any free one)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def build_parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="python -m target_server",
        description="Serve a PyTorch model over HTTP with Flask under gunicorn. Every flag can also "
                    "be set as TARGET_SERVER_<NAME> (e.g. TARGET_SERVER_WORKERS=4).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default=d.model, help="model to serve")
    p.add_argument("--weights", default=d.weights, help="state_dict or bundle file (linear, mlp)")
    p.add_argument("--sleep-ms", type=float, default=d.sleep_ms, help="forward time of the sleep model")
    p.add_argument("--workers", type=int, default=d.workers, help="gunicorn worker processes")
    p.add_argument("--worker-class", choices=WORKER_CLASSES, default=d.worker_class,
                   help="sync: one request per worker, connection closed after each; gthread: threads + keep-alive")
    p.add_argument("--threads", type=int, default=d.threads, help="threads per worker (gthread)")
    p.add_argument("--lock", choices=LOCK_MODES, default=d.lock,
                   help="global: the article's threading.Lock around every forward")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help="dynamic batching: rows per forward (1 = off; needs gthread)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="longest wait for batch-mates that are already arriving")
    p.add_argument("--queue-limit", type=int, default=d.queue_limit,
                   help="requests waiting in a worker's batcher before 503")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads per worker (default: cores // workers)")
    p.add_argument("--host", default=d.host, help="address to listen on")
    p.add_argument("--port", type=int, default=d.port, help="port (0 = any free port)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger bodies get 413")
    p.add_argument("--max-rows", type=int, default=d.max_rows, help="rows per request")
    p.add_argument("--timeout-s", type=int, default=d.timeout_s, help="gunicorn worker timeout")
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s,
                   help="longest wait in the batch queue before 503")
    p.add_argument("--keepalive-s", type=int, default=d.keepalive_s, help="idle keep-alive (gthread)")
    p.add_argument("--backlog", type=int, default=d.backlog, help="listen backlog")
    p.add_argument("--auth-token", default=None, help="require 'Authorization: Bearer TOKEN'")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started the server dies")
    return p


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    parser = build_parser()
    parser.set_defaults(**env_defaults())
    return ServerConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    from target_server.launcher import check_weights_before_start, serve

    try:
        config = config_from_args(argv)
    except ValueError as exc:  # a TARGET_SERVER_* variable that is not a number
        print(f"target_server: error: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"target_server: error: {problem}", file=sys.stderr)
        return EXIT_BAD_USAGE
    busy = port_in_use(config.host, config.port)
    if busy:
        print(f"target_server: error: {busy}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    try:
        check_weights_before_start(config)
    except WeightsError as exc:
        print(f"target_server: error: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    return serve(config)
