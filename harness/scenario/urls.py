"""`target.url` read once: scheme, host, port and the base path put before every endpoint."""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetUrl(NamedTuple):
    scheme: str  # http | https
    host: str
    port: int
    base_path: str  # "" or "/a/b" (no trailing slash): joined with the endpoint as base_path + endpoint


def split_url(url: str) -> TargetUrl:
    """The parts of a target url; ValueError with the reason when it is not one the engines can load."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"url must look like http://HOST:PORT or https://HOST[:PORT][/base/path], got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry a user or password; put credentials in target.headers")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError(f"url must not have a query or fragment (put them in endpoint), got {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url has a bad port: {exc}") from None
    if port == 0:
        raise ValueError("url has a bad port: 0")
    base = parts.path.rstrip("/")
    if any(c in base for c in " \t\r\n"):
        raise ValueError(f"url's path must not contain spaces, got {parts.path!r}")
    return TargetUrl(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], base)
