"""Pass criteria written as `metric op number` (k6 style): p95_ms < 200, error_rate < 0.01, rps >= 100.

`metric[name]` judges one named kind of request (summary.json's `by_name`): `p95_ms[predict] < 50`.
A verdict figure is judged by its word with == or !=: `soak_verdict != leaking`.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.results import figures

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
WORD_OPERATORS: dict[str, Callable[[str, str], bool]] = {"==": operator.eq, "!=": operator.ne}
# figures summary.json's `by_name` carries for each name (analysis.stats.window_figures)
PER_NAME = tuple(n for n in figures.IN_SUMMARY
                 if str(figures.FIGURES[n].path).split(".")[0] in ("latency_ms", "rps", "ok_rps", "error_rate",
                                                                  "requests", "errors"))
_EXPR = re.compile(r"^\s*([a-z0-9_]+(?:\.[a-z0-9]+)?)(?:\[([A-Za-z0-9_.:/-]{1,64})\])?\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[a-z]+)\s*$")


@dataclass(frozen=True)
class Threshold:
    expression: str
    metric: str
    op: str
    limit: float | str  # a word for a verdict figure
    name: str | None = None  # judge only the requests of this name (summary["by_name"][name])

    def evaluate(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """The threshold's result on a summary (or capacity result); a figure the run lacks fails it."""
        scope = summary if self.name is None else (summary.get("by_name") or {}).get(self.name, {})
        observed: float | str | None
        if isinstance(self.limit, str):
            observed = figures.word(scope, self.metric)
            passed = observed is not None and WORD_OPERATORS[self.op](observed, self.limit)
        else:
            observed = figures.value(scope, self.metric)
            passed = observed is not None and OPERATORS[self.op](float(observed), self.limit)
        return {"expression": self.expression, "metric": self.metric, "name": self.name, "observed": observed,
                "limit": self.limit, "op": self.op, "passed": bool(passed)}


def parse_threshold(text: str) -> Threshold:
    match = _EXPR.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not a threshold expression: {text!r}; write `metric op number`, "
                         f"e.g. `p95_ms < 200` (operators: {' '.join(OPERATORS)}), or `soak_verdict != leaking`")
    given, name, op, number = match.groups()
    metric = figures.canonical(given)
    if metric not in figures.IN_SUMMARY:
        import difflib

        near = difflib.get_close_matches(metric, figures.IN_SUMMARY, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ValueError(f"unknown metric {given!r}{hint}; known: {', '.join(figures.IN_SUMMARY)}")
    if name is not None and metric not in PER_NAME:
        raise ValueError(f"{metric} is not measured per request name; per name: {', '.join(PER_NAME)}")
    words = figures.FIGURES[metric].words
    if words:
        if op not in WORD_OPERATORS or number not in words:
            raise ValueError(f"{metric} is a verdict: write `{metric} == WORD` or `{metric} != WORD` with WORD one "
                             f"of {', '.join(words)}")
        return Threshold(text.strip(), metric, op, number, name)
    if op in WORD_OPERATORS:
        raise ValueError(f"{op} judges a verdict figure ({', '.join(n for n, f in figures.FIGURES.items() if f.words)}); "
                         f"a number is judged with {' '.join(OPERATORS)}")
    try:
        limit = float(number)
    except ValueError:
        raise ValueError(f"{metric} is a number: {number!r} is not one") from None
    return Threshold(text.strip(), metric, op, limit, name)
