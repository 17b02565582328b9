"""Capacity search: the highest open-model arrival rate meeting the SLO, by bracketing then bisecting."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.report.html import badge, esc, fmt, image, page, table
from harness.report.plotting import new_figure, png
from harness.results import figures, layout
from harness.results.summary import RunResult
from harness.scenario.loading import load_scenario
from harness.scenario.schema import Capacity, Scenario
from harness.scenario.thresholds import parse_threshold

CAPACITY_FILE = layout.CAPACITY
# capacity.json's schema_version. History: none = before JSON outputs were versioned; 1 = versioned.
SCHEMA_VERSION = 1
# figures recorded for every probe
PROBE_FIGURES = ("ok_rps", "error_rate", "p50_ms", "p95_ms", "p99_ms")
# runs one probe: (scenario, scenario path, run folder) -> its result
RunProbe = Callable[[Scenario, Path, Path], RunResult]


def probe_overrides(cap: Capacity, rate: float) -> list[str]:
    """The scenario changes for one probe: a constant-rate open-model load and the SLO as thresholds."""
    stages = [{"duration": cap.warmup, "target": rate}, {"duration": cap.probe, "target": rate}]
    return ["load.model=open", f"load.arrival={cap.arrival}", f"load.start={rate}",
            f"load.stages={json.dumps(stages)}", f"load.warmup={cap.warmup}",
            f"thresholds={json.dumps(list(cap.slo))}", "sweep=null", "capacity=null"]


class Search:
    """Bracket (double from `start` until a probe fails, or halve until one passes), then bisect."""

    def __init__(self, path: Path, overrides: list[str], folder: Path, run_probe: RunProbe,
                 say: Callable[[str], None] = print) -> None:
        self.path, self.overrides, self.folder, self.run_probe, self.say = path, overrides, folder, run_probe, say
        scenario, _ = load_scenario(path, overrides)
        if scenario.capacity is None:
            raise UserError(f"{path}: no capacity: block (e.g. capacity: {{slo: [p99_ms < 100]}})")
        self.scenario, self.cap = scenario, scenario.capacity
        self.probes: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.interrupted = False

    def probe(self, rate: float) -> str | None:
        """Run one probe: 'pass', 'fail', 'invalid' (an invalid probe is retried once), None when interrupted."""
        for attempt in (1, 2):
            scenario, path = load_scenario(self.path, self.overrides + probe_overrides(self.cap, rate))
            run_dir = self.folder / f"probe-{len(self.probes) + 1:02d}-{rate:.6g}rps"
            run_dir.mkdir(parents=True, exist_ok=True)
            result = self.run_probe(scenario, path, run_dir)
            summary = result.summary
            if summary is None or result.interrupted:
                self.interrupted = True
                return None
            outcome = ("invalid" if not summary.get("valid") else "pass" if summary.get("passed") else "fail")
            self.probes.append({"rate": rate, "outcome": outcome, "run_dir": str(run_dir),
                                **{name: figures.value(summary, name) for name in PROBE_FIGURES},
                                "failed": [t["expression"] for t in summary.get("thresholds", []) if not t["passed"]],
                                "invalid_reasons": summary.get("invalid_reasons", [])})
            detail = (f"p99 {fmt(figures.value(summary, 'p99_ms'))} ms, {fmt(summary.get('ok_rps'))} ok req/s"
                      if outcome != "invalid" else "; ".join(summary.get("invalid_reasons", [])))
            self.say(f"  probe {len(self.probes):>2} at {rate:8.1f} req/s: {outcome.upper():<7} ({detail})")
            if outcome != "invalid":
                return outcome
            if attempt == 1:
                self.say("    an invalid probe is no evidence; repeating it once")
        return "invalid"

    def run(self) -> dict[str, Any]:
        cap = self.cap
        low: float | None = None  # highest passing rate
        high: float | None = None  # lowest failing rate
        rate = cap.start
        while len(self.probes) < cap.max_probes:
            if low is not None and high is not None and (high - low) / low <= cap.precision:
                break
            outcome = self.probe(rate)
            if outcome is None:
                break
            if outcome == "invalid":
                self.notes.append(f"the probe at {rate:.6g} req/s was invalid twice (the generator could not "
                                  "deliver it or the target failed): the search stopped there; it is no evidence")
                break
            if outcome == "pass":
                low = rate
                if high is None and rate >= cap.max_rate:
                    self.notes.append(f"passed at max_rate ({cap.max_rate:g} req/s): capacity is at least that")
                    break
            else:
                high = rate
            if high is None:
                rate = min(rate * 2, cap.max_rate)
            elif low is None:
                rate = rate / 2
                if rate < 0.01:
                    break
            else:
                rate = (low + high) / 2
        precise = low is not None and high is not None and (high - low) / low <= cap.precision
        if len(self.probes) >= cap.max_probes and not precise:
            self.notes.append(f"stopped after max_probes ({cap.max_probes}) before reaching the precision")
        elif low is not None and high is not None and not self.interrupted:
            self._confirm(low)
        failing = [p["rate"] for p in self.probes if p["outcome"] == "fail"]
        high = min(failing, default=None)
        low = max((p["rate"] for p in self.probes if p["outcome"] == "pass" and p["rate"] not in failing
                   and p["rate"] < (high or float("inf"))), default=None)
        return self._result(low, high)

    def _confirm(self, rate: float) -> None:
        """Repeat the last passing rate: a capacity must hold twice; if it does not, the results disagree."""
        self.say(f"  confirming {rate:.6g} req/s")
        outcome = self.probe(rate)
        if outcome == "fail":
            self.notes.append(f"results disagree at {rate:.6g} req/s (passed once, failed once): "
                              "counted as failing; the capacity is the next lower passing rate")
        elif outcome == "invalid":
            self.notes.append(f"the repeat at {rate:.6g} req/s was invalid twice: the capacity is unconfirmed")

    def _result(self, low: float | None, high: float | None) -> dict[str, Any]:
        found = low is not None
        if low is None:
            self.notes.append("no probe passed the SLO: the capacity is below the lowest rate tried")
        result = {"name": self.scenario.name, "slo": list(self.cap.slo), "capacity_rps": low,
                  "first_failing_rps": high, "boundary": self._boundary(low, high)}
        result["uncertainty"] = describe_bracket(result)
        judged = [t.evaluate(result) for t in self.scenario.parsed_thresholds]
        return {**result, "valid": found and not self.interrupted, "thresholds": judged,
                "passed": found and all(t["passed"] for t in judged), "interrupted": self.interrupted,
                "complete": not self.interrupted, "probes": self.probes, "notes": self.notes,
                "server": (self.scenario.target.server.model_dump(exclude={"auth_token"})
                           if self.scenario.target.server else None),
                "run_dir": next((p["run_dir"] for p in reversed(self.probes)
                                 if p["outcome"] == "pass" and p["rate"] == low), None),
                "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


    def _boundary(self, low: float | None, high: float | None) -> dict[str, list[str]]:
        """The outcomes of every probe at the last passing and the first failing rate (the repeats
        that decide the capacity)."""
        return {key: [p["outcome"] for p in self.probes if p["rate"] == rate]
                for key, rate in (("last_passing", low), ("first_failing", high)) if rate is not None}


def describe_bracket(result: dict[str, Any]) -> str | None:
    """A capacity with its uncertainty, said the same way on the console, the page and the sweep:
    the last passing and first failing rates and how often each was probed."""
    low, high = result.get("capacity_rps"), result.get("first_failing_rps")
    if low is None:
        return None
    boundary = result.get("boundary") or {}

    def times(key: str) -> str:
        outcomes = boundary.get(key) or []
        word = "passed" if key == "last_passing" else "failed"
        count = sum(o == ("pass" if key == "last_passing" else "fail") for o in outcomes)
        return f", {word} {count} of {len(outcomes)} probes" if outcomes else ""

    text = f"{low:.6g} req/s last passing{times('last_passing')}"
    if high is None:
        return text + "; no failing rate found above it"
    return f"between {text} and {high:.6g} req/s first failing{times('first_failing')}"


def chart(result: dict[str, Any]) -> str | None:
    """Latency (p50/p95/p99) against offered rate, one marker per probe, pass/fail/invalid, the capacity."""
    probes = [p for p in result["probes"] if p["p99_ms"] is not None]
    if not probes:
        return None
    fig = new_figure(4.6, 10.0)
    ax = fig.add_subplot()
    ordered = sorted(probes, key=lambda p: p["rate"])
    for key, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
        ax.plot([p["rate"] for p in ordered], [p[key] for p in ordered], style, color="#57606a", lw=1, label=key)
    colours = {"pass": "#1a7f37", "fail": "#cf222e", "invalid": "#9a6700"}
    for outcome, colour in colours.items():
        chosen = [p for p in probes if p["outcome"] == outcome]
        if chosen:
            ax.scatter([p["rate"] for p in chosen], [p["p99_ms"] for p in chosen], s=60, color=colour,
                       zorder=3, label=f"p99, {outcome}")
    for expression in result["slo"]:
        threshold = parse_threshold(expression)
        if threshold.metric.endswith("_ms") and not isinstance(threshold.limit, str):
            ax.axhline(threshold.limit, color="#cf222e", lw=0.8, ls="--", label=f"SLO {expression}")
    if result["capacity_rps"]:
        ax.axvspan(result["capacity_rps"], result["first_failing_rps"] or result["capacity_rps"],
                   color="#1a7f37", alpha=0.12, label="capacity (last pass .. first fail)")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (req/s, open model)")
    ax.set_ylabel("latency (ms, from intended send time)")
    ax.set_title("Capacity search: latency vs offered rate, every probe")
    ax.legend(loc="upper left")
    return png(fig)


def write_page(folder: Path, result: dict[str, Any]) -> Path:
    capacity = result["capacity_rps"]
    head = (badge(f"capacity {fmt(capacity)} req/s", "pass") if capacity is not None
            else badge("no passing rate", "fail"))
    rows = [(i, fmt(p["rate"]), p["outcome"], fmt(p["ok_rps"]), fmt(p["p50_ms"]), fmt(p["p95_ms"]),
             fmt(p["p99_ms"]), fmt(p["error_rate"]), "; ".join(p["failed"] + p["invalid_reasons"]), p["run_dir"])
            for i, p in enumerate(result["probes"], 1)]
    body = (f"<h1>Capacity of {esc(result['name'])}</h1><p class='sub'>SLO: {esc(' and '.join(result['slo']))}"
            f" · server: {esc(json.dumps(result['server']))}</p><div class='box'>{head}"
            f"<p>{esc(result['uncertainty'] or '')}</p><ul class='tight'>"
            + "".join(f"<li>{esc(n)}</li>" for n in result["notes"]) + "</ul></div>"
            + image(chart(result), "latency vs rate")
            + "<h2>Probes</h2>" + table(["#", "offered req/s", "outcome", "ok req/s", "p50 ms", "p95 ms", "p99 ms",
                                          "error rate", "why", "run folder"], rows, numeric_from=9))
    return layout.atomic_write(folder / layout.CAPACITY_PAGE, page(f"Capacity: {result['name']}", body))


def search_capacity(path: Path, overrides: list[str], folder: Path, run_probe: RunProbe,
                    say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search in `folder` (one run folder per probe); write capacity.json and capacity.html."""
    search = Search(path, overrides, folder, run_probe, say)
    folder.mkdir(parents=True, exist_ok=True)
    result = search.run()
    if result["probes"]:
        result["page"] = str(write_page(folder, result))
    layout.write_json(folder / CAPACITY_FILE, result, SCHEMA_VERSION)
    return result


def capacity_command(path: Path, overrides: list[str], out: Path | None) -> int:
    """`harness capacity`: search, print the capacity with its bracket; exit 3 when nothing passed,
    1 when the scenario's thresholds (`capacity_rps >= 150`) fail on the result."""
    import time

    from harness.errors import EXIT_INTERRUPTED, EXIT_INVALID_RUN, EXIT_PASSED, EXIT_THRESHOLD_FAILED
    from harness.run.runner import REPORTS_DIR
    from harness.workflows.single import probe

    scenario, path = load_scenario(path, overrides)
    folder = out or REPORTS_DIR / f"capacity-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"capacity search: {scenario.name}; folder {folder}")
    result = search_capacity(path, overrides, folder, probe)
    if result["interrupted"]:
        return EXIT_INTERRUPTED
    if result["capacity_rps"] is not None:
        uncertainty = f" ({result['uncertainty']})" if result["uncertainty"] else ""
        print(f"capacity: {result['capacity_rps']:.6g} req/s{uncertainty}")
    for note in result["notes"]:
        print(f"note: {note}")
    if "page" in result:
        print(f"chart: {result['page']}")
    for t in result["thresholds"]:
        observed = "-" if t["observed"] is None else f"{t['observed']:g}"
        print(f"threshold {t['expression']}: observed {observed}, {'PASS' if t['passed'] else 'FAIL'}")
    if result["capacity_rps"] is None:
        return EXIT_INVALID_RUN
    return EXIT_PASSED if result["passed"] else EXIT_THRESHOLD_FAILED
