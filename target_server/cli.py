"""`python -m target_server`: start the bundled model server from flags (or TARGET_SERVER_* variables)."""
from __future__ import annotations

import argparse
import ssl
import sys

from target_server.config import ServerConfig, WeightsError, env_defaults
from target_server.ports import port_taken

EXIT_BAD_USAGE = 2
EXIT_PORT_IN_USE = 3


def port_in_use(host: str, port: int) -> str | None:
    """Say so at once when the address is taken (gunicorn would retry for 5 s, then log a bare error)."""
    if port == 0:
        return None
    try:
        if port_taken(host, port):
            return f"{host}:{port} is already in use (pick another --port, or --port 0 for any free one)"
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def tls_files_problem(certfile: str | None, keyfile: str | None) -> str | None:
    """Load the certificate and key as the server will, so a bad file is one line naming it."""
    if not (certfile and keyfile):
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        return f"tls: cannot read {exc.filename or certfile}: no such file"
    except PermissionError as exc:
        return f"tls: cannot read {exc.filename or certfile}: permission denied"
    except (ssl.SSLError, OSError) as exc:
        return f"tls: {certfile} / {keyfile} are not a usable PEM certificate and matching key ({exc})"
    return None


def build_parser() -> argparse.ArgumentParser:
    """One flag per serving knob (target_server.config.ServerConfig is their only source)."""
    p = argparse.ArgumentParser(
        prog="python -m target_server",
        description="Serve a PyTorch model over HTTP with Flask under gunicorn. Every flag can also "
                    "be set as TARGET_SERVER_<NAME> (e.g. TARGET_SERVER_WORKERS=4).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for k in ServerConfig.knobs():
        if k.type is bool:
            p.add_argument(k.flag, action="store_true", help=k.help)
        else:
            p.add_argument(k.flag, type=k.type, choices=k.choices, default=k.default, help=k.help)
    return p


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    parser = build_parser()
    parser.set_defaults(**env_defaults())
    return ServerConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    from target_server.device import DeviceUnavailable, resolve_device
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
    bad_tls = tls_files_problem(config.certfile, config.keyfile)
    if bad_tls:
        print(f"target_server: error: {bad_tls}", file=sys.stderr)
        return EXIT_BAD_USAGE
    busy = port_in_use(config.host, config.port)
    if busy:
        print(f"target_server: error: {busy}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    try:
        check_weights_before_start(config)
        if config.device == "cuda":
            resolve_device("cuda")  # NVML only: the master leaves CUDA uninitialised for its workers
    except (WeightsError, DeviceUnavailable) as exc:
        print(f"target_server: error: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    return serve(config)
