"""The run folder's two descriptions of itself: the resolved `scenario.yaml` and `run.json`.

`scenario.yaml` is the scenario as validated and overridden (durations in seconds), written
before anything runs; `run.json` holds the run's metadata and the machine's, written when the
load starts, so a run whose harness was killed can still be summarised (run.recover).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.errors import UserError
from harness.results import layout

if TYPE_CHECKING:
    from harness.scenario.plan import LoadPlan
    from harness.scenario.schema import Scenario

# run.json's schema_version. History: none = written before run.json was versioned (read as 1);
# 1 = the same content with its version.
SCHEMA_VERSION = 1


def write_scenario(run_dir: Path, scenario: Scenario) -> None:
    layout.atomic_write(Path(run_dir) / layout.SCENARIO,
                        yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))


def read_scenario_doc(run_dir: Path) -> dict[str, Any]:
    """The resolved scenario as a plain mapping ({} when the folder has none or it is unreadable)."""
    try:
        doc = yaml.safe_load((Path(run_dir) / layout.SCENARIO).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_scenario(run_dir: Path) -> Scenario:
    """The resolved scenario, validated; UserError (exit 2) when it is missing or unreadable."""
    from pydantic import ValidationError

    from harness.scenario.schema import Scenario

    path = Path(run_dir) / layout.SCENARIO
    if not path.is_file():
        raise UserError(f"{run_dir}: no {layout.SCENARIO}")
    try:
        return Scenario.model_validate(read_scenario_doc(run_dir))
    except ValidationError as exc:
        raise UserError(f"{path}: not a scenario this harness reads: {str(exc).splitlines()[0]}") from None


def read_plan(run_dir: Path) -> LoadPlan | None:
    """The run's load plan (None when its scenario.yaml is missing or unreadable)."""
    from harness.scenario.plan import plan_from_scenario

    try:
        return plan_from_scenario(read_scenario(run_dir))
    except UserError:
        return None


def environment() -> dict[str, Any]:
    """The machine and software a run measured on."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        from importlib.metadata import version

        torch_version: str | None = version("torch")
    except Exception:
        torch_version = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch": torch_version, "harness_commit": commit}


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """The run's metadata and the machine it ran on, as they were when the load started."""
    layout.write_json(Path(run_dir) / layout.META, {**meta, "environment": environment()}, SCHEMA_VERSION)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """run.json without its schema_version (FileNotFoundError when absent)."""
    return layout.read_json(Path(run_dir) / layout.META, (None, SCHEMA_VERSION), "run metadata")
