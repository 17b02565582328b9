"""HTTP basic auth in front of Locust's web UI, from HARNESS_WEB_AUTH=USER:PASSWORD.

Locust's own `--web-login` needs a login provider written per project; a shared password is what
people opening the UI to a team network usually want. Basic auth sends the password in clear
text on every request: use it on a trusted network, or behind TLS (`--tls-cert`/`--tls-key`).
"""
from __future__ import annotations

import hmac

from flask import Flask, Response, request

WEB_AUTH_ENV = "HARNESS_WEB_AUTH"


def parse_credentials(value: str) -> tuple[str, str]:
    """USER:PASSWORD, both non-empty (the password may contain colons)."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{WEB_AUTH_ENV} must be USER:PASSWORD with both parts non-empty")
    return user, password


def require_basic_auth(app: Flask, user: str, password: str) -> None:
    """Answer 401 to every request of the UI (pages, API, static files) without these credentials."""
    expected = (user.encode(), password.encode())

    @app.before_request
    def check_credentials() -> Response | None:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            given = ((auth.username or "").encode(), (auth.password or "").encode())
            # both comparisons always run, in constant time, so timing tells nothing
            if hmac.compare_digest(given[0], expected[0]) & hmac.compare_digest(given[1], expected[1]):
                return None
        return Response("authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="Locust"'})
