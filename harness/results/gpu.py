"""gpu.csv: NVML's readings of every GPU on the run's clock, and the GPU memory of the server's processes.

A device row has `pid` empty and every reading it could get (empty: not supported); a process row
has the device, the pid and its GPU memory only. The summary's `gpu` block is built from it here.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.results import layout

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["t", "gpu", "name", "pid", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "power_w",
           "temperature_c", "sm_clock_mhz"]
HEADER = ",".join(COLUMNS) + "\n"
MB = 2**20


def _cell(value: float | int | None) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_lines(t: float, readings: Iterable[Any], watched: set[int]) -> list[str]:
    """The rows of one tick: each device's readings, then each watched process found on it."""
    out = []
    for r in readings:
        name = r.name.replace(",", " ")
        out.append(",".join([f"{t:.3f}", str(r.index), name, "", *(_cell(v) for v in (
            r.utilization_percent, r.memory_used_bytes, r.memory_total_bytes, r.power_w, r.temperature_c,
            r.sm_clock_mhz))]) + "\n")
        out += [f"{t:.3f},{r.index},{name},{pid},,{_cell(used)},,,,\n"
                for pid, used in sorted(r.processes.items()) if pid in watched]
    return out


def read_gpu(run_dir: Path) -> pd.DataFrame:
    """Every complete row of the run's gpu.csv (an empty frame with the columns without one)."""
    import pandas as pd

    data = layout.complete_lines(Path(run_dir) / layout.GPU)
    if data.count(b"\n") < 1:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(io.BytesIO(data))


def gpu_figures(frame: pd.DataFrame, start: float, end: float) -> dict[str, Any] | None:
    """summary.json's `gpu` block over the measured window: per device the mean utilization, peak
    memory, mean power and top temperature, the server processes' peak GPU memory; None without rows."""
    window = frame[(frame["t"] >= start) & (frame["t"] <= end)]
    devices = window[window["pid"].isna()]
    if devices.empty:
        return None
    procs = window[window["pid"].notna()]
    out: list[dict[str, Any]] = []
    for index, rows in devices.groupby("gpu"):
        mine = procs[procs["gpu"] == index].groupby("t")["memory_used_bytes"].sum()
        out.append({"index": int(index), "name": str(rows["name"].iloc[0]),
                    "utilization_percent_mean": _round(rows["utilization_percent"].mean()),
                    "memory_used_mb_peak": _round(rows["memory_used_bytes"].max() / MB),
                    "memory_total_mb": _round(rows["memory_total_bytes"].max() / MB),
                    "power_w_mean": _round(rows["power_w"].mean()),
                    "temperature_c_max": _round(rows["temperature_c"].max()),
                    "sm_clock_mhz_mean": _round(rows["sm_clock_mhz"].mean()),
                    "server_memory_mb_peak": _round(mine.max() / MB) if not mine.empty else None})
    utils: list[float] = [d["utilization_percent_mean"] for d in out if d["utilization_percent_mean"] is not None]
    peaks: list[float] = [d["memory_used_mb_peak"] for d in out if d["memory_used_mb_peak"] is not None]
    return {"devices": out, "utilization_percent_mean": _round(sum(utils) / len(utils)) if utils else None,
            "memory_used_mb_peak": max(peaks) if peaks else None}


def _round(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 1)
