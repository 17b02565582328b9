"""Response checks (`target.expect`): what a response must be to count as a success, judged cheaply.

The status is checked on every response; the body rules (a JSON path present, equal to a value,
a string contained) on a seeded fraction (`sample`), and only those responses keep their body
and are parsed, so checking never costs the generator its schedule. Both engines use `Checker`;
a failed check is an error of kind `check` whose reason goes to `checks-<gen>.csv`.
"""
from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

import orjson

from harness.results.samples import CHECK, HTTP_ERROR, OK

if TYPE_CHECKING:
    from harness.scenario.schema import Scenario

Path = tuple[str | int, ...]
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]")
REASON_LIMIT = 160
BODY_RULES = ("json_path", "equals", "contains")
# the bundled server's endpoints, and the field every successful answer of theirs has
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


def parse_path(text: str) -> Path:
    """`outputs[0].data` -> ("outputs", 0, "data"); a leading `$` is allowed. ValueError if malformed."""
    body = text[1:] if text.startswith("$") else text
    steps: list[str | int] = []
    pos = 0
    while pos < len(body):
        match = _STEP.match(body, pos)
        if match is None:
            raise ValueError(f"json_path {text!r}: cannot read it from {body[pos:]!r} on "
                             "(write keys and [indexes], e.g. outputs[0].data)")
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        pos = match.end()
    if not steps:
        raise ValueError(f"json_path {text!r} names no field")
    return tuple(steps)


def default_rules(endpoint: str) -> dict[str, Any]:
    """The body rule for the bundled server's endpoints: /predict answers `predictions`, v2 `outputs`."""
    if endpoint == "/predict":
        return {"json_path": "predictions"}
    if V2_INFER.match(endpoint):
        return {"json_path": "outputs"}
    return {}


def resolve(scenario: Scenario) -> dict[str, Any] | None:
    """The checks a run applies, as plain data for the engines (None: none, as before checks existed).

    Without `expect`, runs on the bundled server check its endpoints' answers; a given `expect`
    without a body rule gets the endpoint's default one too (`sample: 0` turns body checks off).
    A function of the values alone, so the run folder's scenario.yaml (every key written out,
    null included) checks the same way again."""
    target = scenario.target
    expect = target.expect
    # requests from a dataset or a mix may each name their own endpoint: target.endpoint says nothing of them
    mixed = getattr(target, "dataset", None) is not None or bool(getattr(target, "requests", None))
    defaults = {} if mixed else default_rules(target.endpoint)
    if expect is None:
        return {"status": [200], "sample": 1.0, "seed": 0, **defaults} if defaults and scenario.uses_bundled_server \
            else None
    doc = {"status": list(expect.status), "sample": expect.sample, "seed": expect.seed}
    given = {k: getattr(expect, k) for k in BODY_RULES if getattr(expect, k) is not None}
    doc.update(given if given else defaults)
    return doc


class Checker:
    """One generator's checks: `wants_body()` before a request, `judge()` after it."""

    def __init__(self, doc: dict[str, Any], gen: int = 0) -> None:
        self.statuses = frozenset(doc["status"])
        self.path: Path | None = parse_path(doc["json_path"]) if doc.get("json_path") else None
        self.equals = doc.get("equals")
        self.compare = self.equals is not None  # null: not compared
        contains = doc.get("contains")
        self.contains = contains.encode() if contains else None
        self.has_body_rules = self.path is not None or self.compare or self.contains is not None
        self.sample = float(doc["sample"])
        self._random = random.Random(f"{doc.get('seed', 0)}-{gen}").random  # seeded per generator

    def wants_body(self) -> bool:
        """Whether the next response's body is checked (the seeded `sample` fraction)."""
        return self.has_body_rules and (self.sample >= 1.0 or self._random() < self.sample)

    def judge(self, status: int, body: bytes | None) -> tuple[str, str | None]:
        """(error kind, reason) of a response: OK, the usual `http` for an unexpected status >= 400,
        or `check` with why. `body` is None when it was not sampled (only the status is judged)."""
        if status not in self.statuses:
            if status >= 400:
                return HTTP_ERROR, None
            return CHECK, f"status {status}, expected {' or '.join(map(str, sorted(self.statuses)))}"
        if body is None:
            return OK, None
        reason = self.body_problem(body)
        return (OK, None) if reason is None else (CHECK, reason)

    def body_problem(self, body: bytes) -> str | None:
        if self.contains is not None and self.contains not in body:
            return _short(f"body does not contain {self.contains.decode()!r}")
        if self.path is None and not self.compare:
            return None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _short(f"body is not JSON: {exc}")
        where = "body"
        for step in self.path or ():
            if isinstance(step, int):
                if not isinstance(value, list):
                    return _short(f"{where} is not a list (no [{step}])")
                if step >= len(value):
                    return _short(f"{where} has {len(value)} items (no [{step}])")
                where = f"{where}[{step}]" if where != "body" else f"[{step}]"
            else:
                if not isinstance(value, dict):
                    return _short(f"{where} is not an object (no {step!r})")
                if step not in value:
                    return _short(f"no {step!r} in {where}")
                where = step if where == "body" else f"{where}.{step}"
            value = value[step]
        if self.compare and not _same(value, self.equals):
            return _short(f"{where} is {_json(value)}, expected {_json(self.equals)}")
        return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _short(text: str) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 3] + "..."
