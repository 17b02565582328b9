"""Pass criteria written as `metric op number` (k6 style): p95_ms < 200, error_rate < 0.01, rps >= 100."""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

METRICS = {
    "p50_ms": "latency_ms.p50", "p90_ms": "latency_ms.p90", "p95_ms": "latency_ms.p95",
    "p99_ms": "latency_ms.p99", "p999_ms": "latency_ms.p999", "max_ms": "latency_ms.max",
    "mean_ms": "latency_ms.mean", "error_rate": "error_rate", "rps": "rps", "ok_rps": "ok_rps",
    "requests": "requests", "errors": "errors",
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_EXPR = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    expression: str
    metric: str
    op: str
    limit: float

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        observed = lookup(summary, METRICS[self.metric])
        passed = observed is not None and OPERATORS[self.op](float(observed), self.limit)
        return {"expression": self.expression, "metric": self.metric, "observed": observed,
                "limit": self.limit, "op": self.op, "passed": bool(passed)}


def parse_threshold(text: str) -> Threshold:
    match = _EXPR.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not a threshold expression: {text!r}; write `metric op number`, "
                         f"e.g. `p95_ms < 200` (operators: {' '.join(OPERATORS)})")
    metric, op, number = match.groups()
    if metric not in METRICS:
        import difflib

        near = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ValueError(f"unknown metric {metric!r}{hint}; known: {', '.join(METRICS)}")
    return Threshold(text.strip(), metric, op, float(number))


def lookup(summary: dict[str, Any], dotted: str) -> Any:
    value: Any = summary
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
