"""Running the app under gunicorn, with every setting from one ServerConfig and clean shutdown.

The master never builds a model (torch + OpenMP hang after fork when used before it): workers
import the app factory after fork (Flask's, or the FastAPI twin's under uvicorn workers). Prometheus multiprocess files, readiness markers and a self-signed certificate (tls without
files) live in a private temporary directory that is removed on exit.
"""
from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from target_server.config import ServerConfig
from target_server.readiness import STATE_DIR_ENV, mark_gone
from target_server.tls import self_signed

# gthread runs gunicorn's gthread with keep-alive connections kept by their threads (worker.py).
GUNICORN_WORKER_CLASSES = {"sync": "sync", "gthread": "target_server.worker.KeepAliveThreadWorker"}
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"  # the FastAPI twin: one event loop per worker process


def gunicorn_worker_class(config: ServerConfig) -> str:
    return UVICORN_WORKER if config.framework == "fastapi" else GUNICORN_WORKER_CLASSES[config.worker_class]


class TargetServerApplication(BaseApplication):
    def __init__(self, config: ServerConfig, tls_files: tuple[str, str] | None = None) -> None:
        self.server_config = config
        self.tls_files = tls_files
        super().__init__()

    def load_config(self) -> None:
        c = self.server_config
        settings: dict[str, Any] = {
            "bind": f"{c.host}:{c.port}",
            "workers": c.workers,
            "worker_class": gunicorn_worker_class(c),
            "threads": c.threads,
            "timeout": c.timeout_s,
            "graceful_timeout": 5,
            "keepalive": c.keepalive_s,
            "backlog": c.backlog,
            "max_requests": 0,  # a restart would reload the model mid-benchmark
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "proc_name": f"target_server[{c.model}]",
            "when_ready": self._when_ready,
            "child_exit": _child_exit,
        }
        if self.tls_files is not None:
            settings["certfile"], settings["keyfile"] = self.tls_files
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25: one shared path collides
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        if self.server_config.framework == "fastapi":  # imported in the worker, after fork
            from target_server.asgi import create_asgi_app

            app: Any = create_asgi_app(self.server_config)
        else:
            from target_server.app import create_app

            app = create_app(self.server_config)
        # Everything made so far (torch, the web framework, the model) lives as long as the worker:
        # frozen, full collections stop walking it again and again. Unfrozen, the FastAPI twin's
        # allocations set off gen-2 collections of 130-165 ms that stalled every request in flight
        # (p99 157 ms against 23 ms frozen, mlp batched at 32 connections).
        gc.freeze()
        return app

    def _when_ready(self, server: Any) -> None:
        c = self.server_config
        host, port = server.LISTENERS[0].getsockname()[:2]
        scheme = "https" if self.tls_files else "http"
        print(f"target_server listening on {scheme}://{host}:{port} ({c.describe()})", flush=True)
        if c.exit_with_parent:
            _watch_parent(os.getppid())


def _child_exit(server: Any, worker: Any) -> None:
    mark_gone(worker.pid)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _watch_parent(parent_pid: int) -> None:
    """Stop the server when whoever started it dies (even by SIGKILL): no orphaned servers."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def check_weights_before_start(config: ServerConfig) -> None:
    """Refuse a weights file that does not fit, before any worker is forked (no torch op runs here)."""
    if not config.weights:
        return
    from target_server.models import REGISTRY, check_weights, read_state_dict

    check_weights(REGISTRY[config.model], read_state_dict(config.weights))


def serve(config: ServerConfig) -> int:
    """Run gunicorn in this process until SIGTERM/SIGINT; returns gunicorn's exit status."""
    state_dir = tempfile.mkdtemp(prefix="target_server-")
    metrics_dir = os.path.join(state_dir, "prometheus")
    os.makedirs(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[STATE_DIR_ENV] = state_dir
    threads = str(config.resolved_torch_threads)
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    tls_files: tuple[str, str] | None = None
    if config.tls:
        if config.certfile and config.keyfile:
            tls_files = (config.certfile, config.keyfile)
        else:
            cert, key = self_signed(Path(state_dir) / "tls")
            tls_files = (str(cert), str(key))
    try:
        TargetServerApplication(config, tls_files).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0
