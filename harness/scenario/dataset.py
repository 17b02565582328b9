"""Request data from a file (`target.dataset`): one request per line of a jsonl file.

A line is either a JSON body, sent as written, or an object `{"body": ..., "endpoint": ...,
"method": ..., "headers": {...}, "name": ...}` (an object is read that way when it has a `body`
key and no key besides those five). Bad lines are located errors (`data.jsonl:17: invalid
JSON: ...`), every one listed up to a limit, found by `check` before anything runs.

Memory stays bounded however long the file: `check` streams it and keeps nothing, and each
generator process reads only its share (`share_positions`): the requests are put in order
(sequential, or a seeded shuffle) and position p goes to generator p % parts, the same split as
the open model's arrivals (harness.scenario.plan), so in a first pass arrival k sends position k.
A generator past its share's end starts it again (a wrap-around).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from harness.errors import UserError

MAX_PROBLEMS = 20  # bad lines listed one by one; the rest are counted
MAX_LINES = 20_000_000
KEYS = frozenset({"body", "endpoint", "method", "headers", "name"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")  # names go into CSV cells and threshold brackets
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Line:
    """One request of a dataset; None fields take the scenario's own (target.endpoint, ...)."""

    number: int  # the file's line number, from 1
    body: bytes
    endpoint: str | None = None
    method: str | None = None
    headers: dict[str, str] | None = None
    name: str | None = None


def parse_line(raw: bytes, number: int) -> Line | str:
    """The request on one (non-blank) line, or why the line is not one."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not (isinstance(doc, dict) and "body" in doc and doc.keys() <= KEYS):
        return Line(number, raw.strip())
    endpoint, method, headers, name = (doc.get(k) for k in ("endpoint", "method", "headers", "name"))
    if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith("/")
                                     and not any(c in endpoint for c in " \r\n")):
        return f"endpoint must be a path starting with / and without spaces, got {_show(endpoint)}"
    if method is not None and method not in METHODS:
        return f"method must be one of {', '.join(METHODS)}, got {_show(method)}"
    if headers is not None:
        if not isinstance(headers, dict):
            return f"headers must be an object of names to strings, got {_show(headers)}"
        for key, value in headers.items():
            if not _TOKEN.match(key) or not isinstance(value, str) or any(c in value for c in "\r\n"):
                return f"headers: not a header: {_show(key)}: {_show(value)}"
    if name is not None and not (isinstance(name, str) and NAME.match(name)):
        return f"name must be 1-64 letters, digits or . _ - : /, got {_show(name)}"
    body = doc["body"]
    encoded = b"" if body is None and method == "GET" else orjson.dumps(body)
    return Line(number, encoded, endpoint, method, headers, name)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= 40 else text[:37] + "..."


def _numbered(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield number, raw


def check(path: Path | str) -> int:
    """How many requests the file holds; UserError (exit 2) listing every bad line, up to a limit.

    Streams the file and keeps nothing, so a dataset of any length costs the parent no memory."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the dataset: {exc.strerror or exc}") from None
    return _checked(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)  # a scenario is validated, then run: read each file once
def _checked(path: Path, _mtime: int, _size: int) -> int:
    messages: list[str] = []
    bad = count = 0
    try:
        for number, raw in _numbered(path):
            result = parse_line(raw, number)
            if isinstance(result, str):
                bad += 1
                if bad <= MAX_PROBLEMS:
                    messages.append(f"{path}:{number}: {result}")
                continue
            count += 1
            if count > MAX_LINES:
                raise UserError(f"{path}: more than {MAX_LINES:,} requests; split the file")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the dataset: {exc.strerror or exc}") from None
    if bad:
        more = bad - len(messages)
        raise UserError(messages + ([f"{path}: ... and {more} more bad lines"] if more else []))
    if not count:
        raise UserError(f"{path}: no requests (the file is empty or every line is blank)")
    return count


def order_of(count: int, order: str, seed: int) -> np.ndarray:
    """Request index at each position: 0..count-1, or a permutation of it from the seed."""
    if order == "shuffle":
        return np.random.default_rng(seed).permutation(count)
    return np.arange(count)


def share_positions(count: int, order: str, seed: int, part: int, parts: int) -> np.ndarray:
    """The request indices generator `part` of `parts` holds, in the order it sends them."""
    return order_of(count, order, seed)[part::parts]


def share(items: Sequence[T], part: int, parts: int, order: str = "sequential", seed: int = 0) -> list[T]:
    """The same split for requests already in memory (one item per request, e.g. a trace's bodies)."""
    return [items[int(i)] for i in share_positions(len(items), order, seed, part, parts)]


def read_share(path: Path | str, count: int, order: str, seed: int, part: int, parts: int,
               build: Callable[[Line], T]) -> list[T]:
    """Generator `part`'s share of a checked dataset of `count` requests, read from the file and
    each line turned at once into what the engine sends (`build`), so no Line outlives its own."""
    wanted = share_positions(count, order, seed, part, parts)
    slot = np.full(count, -1, dtype=np.int64)
    slot[wanted] = np.arange(len(wanted))
    out: list[T | None] = [None] * len(wanted)
    index = 0
    for number, raw in _numbered(Path(path)):
        if index >= count:
            break
        where = int(slot[index])
        if where >= 0:
            line = parse_line(raw, number)
            if isinstance(line, str):  # the file changed since it was checked
                raise UserError(f"{path}:{number}: {line}")
            out[where] = build(line)
        index += 1
    if index < count:
        raise UserError(f"{path}: the file changed since it was checked ({index} of {count} requests left)")
    return out  # type: ignore[return-value]  # every slot was filled above
