"""`harness run` and `harness report`: one run (or `repeat: N` of them) and its report, as users start them."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import UserError
from harness.report.console import summary_table
from harness.results import layout
from harness.results.summary import RunResult
from harness.run.runner import Run, new_run_dir
from harness.scenario.loading import load_scenario
from harness.scenario.schema import Scenario
from harness.scenario.units import parse_duration
from harness.workflows import repeats


def run_overrides(overrides: list[str], url: str | None = None, repeat: int | None = None) -> list[str]:
    """The command line's shortcuts as scenario overrides: `--url`, `--repeat` after the `--set`s."""
    out = list(overrides)
    if repeat is not None:
        out.append(f"repeat={repeat}")
    if url:
        out += [f"target.url={url}", "target.server=null"]
    return out


def load_scaled(path: Path, overrides: list[str], duration: str | None = None) -> tuple[Scenario, Path]:
    """Load a scenario; with `duration`, stretch or shrink its stages (and warm-up) to that total."""
    scenario, path = load_scenario(path, overrides)
    if not duration:
        return scenario, path
    try:
        total = parse_duration(duration)
    except ValueError as exc:
        raise UserError(f"--duration: {exc}") from None
    if total <= 0:
        raise UserError("--duration must be positive")
    if scenario.load.trace is not None:
        raise UserError("--duration cannot rescale a trace replay; set load.trace.speed instead")
    factor = total / scenario.duration
    extra = [f"load.stages[{i}].duration={s.duration * factor!r}" for i, s in enumerate(scenario.load.stages)]
    extra.append(f"load.warmup={scenario.load.warmup * factor!r}")
    return load_scenario(path, overrides + extra)


def make_run_dir(out: Path | None, name: str) -> Path:
    try:
        run_dir = out if out else new_run_dir(name)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {out or 'under reports/'}: {exc.strerror or exc}") from None
    return run_dir


def run_command(scenario: Scenario, path: Path, out: Path | None, quiet: bool) -> int:
    """Run the scenario (N times with `repeat: N`), print its summary, write its report; the exit code."""
    run_dir = make_run_dir(out, scenario.name)
    if scenario.repeat > 1:
        return run_repeated(scenario, path, run_dir, quiet)
    result = Run(scenario, path, run_dir, quiet=quiet).execute()
    if result.summary is not None:
        print(summary_table(result.summary))
    print(f"run folder: {run_dir}")
    if (run_dir / layout.SUMMARY).exists():
        report_after_run(run_dir)
    return result.exit_code


def run_repeated(scenario: Scenario, path: Path, run_dir: Path, quiet: bool) -> int:
    """`repeat: N`: N complete runs in RUN_DIR/repeat-K, then the spread between them."""
    once = scenario.model_copy(update={"repeat": 1})  # each repeat folder's scenario.yaml runs once

    def one(folder: Path) -> RunResult:
        result = Run(once, path, folder, quiet=quiet).execute()
        s = result.summary
        if s is not None:
            print(f"{folder.name}: {s['rps'] or 0:.1f} req/s, p95 {s['latency_ms']['p95'] or 0:.2f} ms, "
                  f"errors {s['errors']}, exit {result.exit_code}", flush=True)
        if (folder / layout.SUMMARY).exists() and not report_after_run(folder):
            return RunResult(130, s)  # Ctrl-C while its report rendered: stop repeating
        return result

    doc = repeats.run_repeats(scenario.repeat, run_dir, one, lambda text: print(text, file=sys.stderr, flush=True))
    if doc["repeats"]:
        print(repeats.format_table(doc))
    print(f"run folder: {run_dir} ({doc['completed']} of {doc['planned']} repeats complete; {layout.REPEATS})")
    return int(doc["exit_code"])


def probe(scenario: Scenario, path: Path, run_dir: Path) -> RunResult:
    """One quiet run, as sweeps and capacity searches measure each point."""
    return Run(scenario, path, run_dir, quiet=True).execute()


def report_after_run(run_dir: Path) -> bool:
    """Write report.html; a failure here never costs the run its summary or exit code.

    Returns False when Ctrl-C interrupted the rendering (the caller should stop there)."""
    from harness.report.run_page import write_report

    try:
        print(f"report: {write_report(run_dir)}")
    except KeyboardInterrupt:
        print(f"warning: report not written (interrupted); render it with: python -m harness report {run_dir}",
              file=sys.stderr)
        return False
    except Exception as exc:  # noqa: BLE001 - a report bug must leave the run's results intact
        print(f"warning: report not written ({type(exc).__name__}: {exc}); "
              f"render it with: python -m harness report {run_dir}", file=sys.stderr)
    return True


def report_command(run_dir: Path) -> int:
    """(Re-)render report.html; a killed run's summary is rebuilt first; a repeated run gets one per repeat."""
    from harness.report.run_page import write_report
    from harness.run.recover import rebuild_summary

    for folder in layout.repeat_dirs(run_dir) or [run_dir]:
        if folder.is_dir() and not (folder / layout.SUMMARY).exists():
            rebuild_summary(folder)
            print(f"{folder}: no summary.json (the run was killed?); rebuilt one from the samples, "
                  "marked partial", file=sys.stderr)
        print(f"report: {write_report(folder)}")
    return 0


def validate_command(paths: list[str]) -> int:
    problems: list[str] = []
    for name in paths:
        try:
            scenario, _ = load_scenario(name)
            shape = ("a trace replay" if scenario.load.trace is not None
                     else f"{len(scenario.load.stages)} stage(s), {scenario.duration:g} s")
            print(f"{name}: ok ({scenario.load.model} model, {shape})")
        except UserError as exc:
            problems += exc.messages
    if problems:
        raise UserError(problems)
    return 0


def run_scenario(path: str | Path, *, overrides: list[str] | None = None, run_dir: Path | None = None,
                 quiet: bool = True) -> RunResult:
    """Load and run one scenario file (Python API): its run folder is `run_dir` or a new one under
    reports/; returns the exit code and summary. `repeat:` is for the command line (run_command)."""
    scenario, scenario_path = load_scenario(Path(path), overrides)
    folder = make_run_dir(run_dir, scenario.name)
    return Run(scenario.model_copy(update={"repeat": 1}), scenario_path, folder, quiet=quiet).execute()
