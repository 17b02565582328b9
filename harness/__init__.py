"""Load-test and benchmark ML inference endpoints: the public Python API.

    import harness
    result = harness.run_scenario("scenarios/smoke.yaml")
    df = harness.read_samples(run_dir)          # one row per request
    summary = harness.read_summary(run_dir)     # summary.json, schema-checked

Only the names in `__all__` are the API; modules under harness/ may move between releases.
Names load on first use, so `import harness` stays cheap (the Locust processes import it too).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> (module, attribute)
_EXPORTS = {
    "load_scenario": ("harness.scenario.loading", "load_scenario"),
    "Scenario": ("harness.scenario.schema", "Scenario"),
    "LoadPlan": ("harness.scenario.plan", "LoadPlan"),
    "plan_from_scenario": ("harness.scenario.plan", "plan_from_scenario"),
    "run_scenario": ("harness.workflows.single", "run_scenario"),
    "Run": ("harness.run.runner", "Run"),
    "RunResult": ("harness.results.summary", "RunResult"),
    "Summary": ("harness.results.summary", "Summary"),
    "read_summary": ("harness.results.summary", "read"),
    "read_samples": ("harness.results.samples", "read_samples"),
    "read_streams": ("harness.results.tokens", "read_streams"),
    "Sample": ("harness.results.samples", "Sample"),
    "FIGURES": ("harness.results.figures", "FIGURES"),
    "analyse_run": ("harness.analysis.runfolder", "analyse_run"),
    "RunAnalysis": ("harness.analysis.runfolder", "RunAnalysis"),
    "windows": ("harness.analysis.windows", "windows"),
    "window_figures": ("harness.analysis.stats", "window_figures"),
    "UserError": ("harness.errors", "UserError"),
    "TargetUnusable": ("harness.errors", "TargetUnusable"),
    "EXIT_PASSED": ("harness.errors", "EXIT_PASSED"),
    "EXIT_THRESHOLD_FAILED": ("harness.errors", "EXIT_THRESHOLD_FAILED"),
    "EXIT_BAD_INPUT": ("harness.errors", "EXIT_BAD_INPUT"),
    "EXIT_INVALID_RUN": ("harness.errors", "EXIT_INVALID_RUN"),
    "EXIT_INTERRUPTED": ("harness.errors", "EXIT_INTERRUPTED"),
}
__all__ = [
    "load_scenario",
    "Scenario",
    "LoadPlan",
    "plan_from_scenario",
    "run_scenario",
    "Run",
    "RunResult",
    "Summary",
    "read_summary",
    "read_samples",
    "read_streams",
    "Sample",
    "FIGURES",
    "analyse_run",
    "RunAnalysis",
    "windows",
    "window_figures",
    "UserError",
    "TargetUnusable",
    "EXIT_PASSED",
    "EXIT_THRESHOLD_FAILED",
    "EXIT_BAD_INPUT",
    "EXIT_INVALID_RUN",
    "EXIT_INTERRUPTED",
]

if TYPE_CHECKING:
    from harness.analysis.runfolder import RunAnalysis, analyse_run
    from harness.analysis.stats import window_figures
    from harness.analysis.windows import windows
    from harness.errors import (
        EXIT_BAD_INPUT,
        EXIT_INTERRUPTED,
        EXIT_INVALID_RUN,
        EXIT_PASSED,
        EXIT_THRESHOLD_FAILED,
        TargetUnusable,
        UserError,
    )
    from harness.results.figures import FIGURES
    from harness.results.samples import Sample, read_samples
    from harness.results.summary import RunResult, Summary
    from harness.results.summary import read as read_summary
    from harness.results.tokens import read_streams
    from harness.run.runner import Run
    from harness.scenario.loading import load_scenario
    from harness.scenario.plan import LoadPlan, plan_from_scenario
    from harness.scenario.schema import Scenario
    from harness.workflows.single import run_scenario


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
