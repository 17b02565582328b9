"""Shared test helpers: paths, CLI runners and process checks, raw servers, fake run folders, browsers.

Test modules import helpers from here, never from each other. Every path is absolute (derived from
this file), so the suite runs the same from any working directory.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/support/__init__.py -> ../..
SCENARIOS = ROOT / "scenarios"
SMOKE = SCENARIOS / "smoke.yaml"
ARTIFACTS = ROOT / "test-artifacts"
