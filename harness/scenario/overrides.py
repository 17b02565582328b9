"""`--set KEY.PATH=VALUE`: one value changed in a raw scenario document before validation."""
from __future__ import annotations

import re
from typing import Any

import yaml

from harness.errors import UserError
from harness.scenario.messages import format_location


def apply_override(doc: dict[str, Any], override: str) -> None:
    """`load.stages[1].duration=2m` sets one value (parsed as YAML) in the raw document."""
    if "=" not in override:
        raise UserError(f"--set {override!r}: write KEY.PATH=VALUE, e.g. load.stages[1].duration=2m")
    path, raw = override.split("=", 1)
    tokens = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    if not tokens or "".join(t if t.startswith("[") else "." + t for t in tokens).lstrip(".") != path:
        raise UserError(f"--set {override!r}: cannot read the key path {path!r}")
    value = yaml.safe_load(raw)
    node: Any = doc
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        key: Any = int(token[1:-1]) if token.startswith("[") else token
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                raise UserError(f"--set {override!r}: {format_location(tuple(_keys(tokens[:i])))} "
                                f"has no item [{key}]")
        elif not isinstance(node, dict):
            raise UserError(f"--set {override!r}: {format_location(tuple(_keys(tokens[:i])))} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(key, str) and key not in node:
                node[key] = {}
            node = node[key]


def _keys(tokens: list[str]) -> list[Any]:
    return [int(t[1:-1]) if t.startswith("[") else t for t in tokens]
