"""Reading a scenario file: YAML, `--set` overrides, validation, and the files it names.

Every problem is reported at once as `location: message` (e.g. `load.stages[2].duration: duration
must not be negative`), with a "did you mean" hint for misspelt keys; paths in a scenario are
relative to the scenario file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import UserError
from harness.scenario.overrides import apply_override
from harness.scenario.schema import Scenario, Target, format_error


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> tuple[Scenario, Path]:
    """Read, override (`key.path=value`) and validate a scenario; raises UserError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a scenario is a YAML mapping with keys such as target, load, "
                        f"thresholds; got {type(doc).__name__}")
    for override in overrides or []:
        apply_override(doc, override)
    return validate(doc, base_dir=path.parent, source=str(path)), path


def validate(doc: dict[str, Any], *, base_dir: Path, source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as exc:
        raise UserError([f"{source}: {format_error(err)}" for err in exc.errors()]) from None
    problems = _check_files(scenario, base_dir)
    if problems:
        raise UserError([f"{source}: {p}" for p in problems])
    return scenario


def _check_files(scenario: Scenario, base_dir: Path) -> list[str]:
    problems = []
    target = scenario.target
    if target.payload_file is not None:
        path = resolve(base_dir, target.payload_file)
        try:
            import orjson

            orjson.loads(path.read_bytes())
        except OSError as exc:
            problems.append(f"target.payload_file: cannot read {path}: {exc.strerror or exc}")
        except ValueError as exc:
            problems.append(f"target.payload_file: {path} is not valid JSON: {exc}")
    problems += _check_trace(scenario, base_dir)
    problems += _check_dataset(target, base_dir)
    problems += _check_mix(target, base_dir)
    problems += _check_tls_files(target, base_dir)
    if target.server is not None and target.server.weights is not None:
        path = resolve(base_dir, target.server.weights)
        if not path.is_file():
            problems.append(f"target.server.weights: no such file {path}")
    return problems


def _check_trace(scenario: Scenario, base_dir: Path) -> list[str]:
    """Read `load.trace` now (every bad line located), and name it by absolute path from here on."""
    from harness.scenario.plan import read_scenario_trace

    load = scenario.load
    if load.trace is None:
        return []
    load.trace = load.trace.model_copy(update={"path": str(resolve(base_dir, load.trace.path).absolute())})
    try:
        trace = read_scenario_trace(scenario)
    except UserError as exc:
        return [f"load.trace: {m}" for m in exc.messages]
    if load.warmup >= trace.duration:
        return [f"load.warmup ({load.warmup:g} s) leaves nothing to measure in the trace's {trace.duration:g} s"]
    target = scenario.target
    others = [k for k in ("payload", "payload_file", "generate", "dataset", "requests")
              if getattr(target, k, None) not in (None, [])]
    if load.trace.body_field is not None and (others or target.method == "GET"):
        return [f"load.trace.body_field gives every request's body; drop target.{others[0]}" if others
                else "load.trace.body_field: a GET request sends no body"]
    return []


def _check_dataset(target: Target, base_dir: Path) -> list[str]:
    """Read `target.dataset` now (every bad line located), and name it by absolute path from here on."""
    from harness.scenario import dataset

    if target.dataset is None:
        return []
    target.dataset = target.dataset.model_copy(
        update={"path": str(resolve(base_dir, target.dataset.path).absolute())})
    try:
        dataset.check(target.dataset.path)
    except UserError as exc:
        return [f"target.dataset: {m}" for m in exc.messages]
    return []


def _check_mix(target: Target, base_dir: Path) -> list[str]:
    """Each kind of request of `target.requests`: its payload file parses and its dataset checks;
    both named by absolute path from here on (the engines read them)."""
    from harness.scenario import dataset

    problems = []
    for i, kind in enumerate(target.requests or []):
        where = f"target.requests[{i}]"
        update: dict[str, Any] = {}
        if kind.payload_file is not None:
            path = resolve(base_dir, kind.payload_file).absolute()
            update["payload_file"] = str(path)
            try:
                import orjson

                orjson.loads(path.read_bytes())
            except OSError as exc:
                problems.append(f"{where}.payload_file: cannot read {path}: {exc.strerror or exc}")
            except ValueError as exc:
                problems.append(f"{where}.payload_file: {path} is not valid JSON: {exc}")
        if kind.dataset is not None:
            update["dataset"] = kind.dataset.model_copy(
                update={"path": str(resolve(base_dir, kind.dataset.path).absolute())})
            try:
                dataset.check(update["dataset"].path)
            except UserError as exc:
                problems += [f"{where}.dataset: {m}" for m in exc.messages]
        if update:
            target.requests[i] = kind.model_copy(update=update)  # type: ignore[index]
    return problems


def _check_tls_files(target: Target, base_dir: Path) -> list[str]:
    """CA, client certificate and key files, and the bundled server's own, must be readable."""
    from harness.engines.tls import file_problems

    files = {f"target.tls.{k}": resolve(base_dir, getattr(target.tls, k))
             for k in ("ca_file", "cert_file", "key_file") if getattr(target.tls, k)}
    if target.server is not None:
        files.update({f"target.server.{k}": resolve(base_dir, getattr(target.server, k))
                      for k in ("certfile", "keyfile") if getattr(target.server, k, None)})
    return file_problems(files)


def resolve(base_dir: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else (base_dir / path)
