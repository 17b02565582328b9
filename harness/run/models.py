"""Which model a generative run asks for: `target.model`, or the first one the server lists."""
from __future__ import annotations

from collections.abc import Callable

import orjson

from harness.engines.http_client import RequestFailed, request_bytes
from harness.errors import TargetUnusable
from harness.run.target import Address
from harness.scenario.schema import Target

MODELS_PATH = "/v1/models"


def run_model(target: Target, address: Address, headers: dict[str, str], say: Callable[[str], None]) -> str | None:
    """A generative run's model: target.model, or the first GET /v1/models lists (said once);
    None for other runs."""
    if target.api is None or target.model is not None:
        return target.model
    model = discover_model(address, headers, timeout=target.timeout)
    say(f"model: {model} (the first of GET /v1/models; set target.model for another)")
    return model


def discover_model(address: Address, headers: dict[str, str], timeout: float = 10.0) -> str:
    """The id of the first model of GET /v1/models (OpenAI's list format); a run without one
    cannot build its requests, so every failure says to set target.model."""
    url = address.url + MODELS_PATH
    conn = address.connection()
    try:
        response = conn.request(request_bytes("GET", address.host, address.port, address.base_path + MODELS_PATH,
                                              b"", headers), timeout, keep_body=True)
    except RequestFailed as exc:
        raise TargetUnusable(f"GET {url} failed ({exc.kind}: {exc.detail}); set target.model") from None
    finally:
        conn.close()
    if response.status != 200:
        raise TargetUnusable(f"GET {url} answered HTTP {response.status}; set target.model")
    try:
        doc = orjson.loads(response.body or b"")
        first = doc["data"][0]["id"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise TargetUnusable(f"GET {url} did not list a model as OpenAI's API does "
                             "({\"data\": [{\"id\": ...}]}); set target.model") from None
    if not isinstance(first, str) or not first:
        raise TargetUnusable(f"GET {url} listed a model without an id; set target.model")
    return first
