"""Matplotlib plumbing shared by the run and comparison charts: Agg canvas, house style, PNG, axes."""
from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from harness.scenario.plan import LoadPlan

DPI = 100
WIDTH = 13.0
TIME_LABEL = "time since the run started (s)"
# applied per chart (a decorator), so importing this module changes no global matplotlib state
STYLE = matplotlib.rc_context({"font.size": 10, "axes.titlesize": 11.5, "axes.titleweight": "bold",
                               "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9,
                               "legend.framealpha": 0.85, "axes.spines.top": False,
                               "axes.spines.right": False})


def new_figure(height: float, width: float = WIDTH) -> Figure:
    """A figure drawn by the Agg canvas (no display, no pyplot state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mark_stages(ax: Axes, plan: LoadPlan | None, warmup: float, labels: bool = True) -> None:
    """Warm-up shaded, stage boundaries dashed; `[k]` names the stage in force from that line on."""
    if warmup > 0:
        ax.axvspan(0, warmup, color="#8c959f", alpha=0.15, lw=0)
        if labels:
            ax.text(warmup / 2, 0.98, "warm-up", transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=8, color="#57606a")
    if plan is None:
        return
    starts: dict[float, int] = {}
    for i, seg in enumerate(plan.segments):
        starts[seg.start] = i  # a 0 s jump and the stage after it share a start: keep the later
    for t, i in starts.items():
        if t > 0:
            ax.axvline(t, color="#6e7781", ls="--", lw=0.8)
        if labels:
            ax.text(t, 1.01, f" [{i}]", transform=ax.get_xaxis_transform(), ha="left", va="bottom",
                    fontsize=8, color="#57606a")


PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def plain_log(axis: Any) -> None:
    """Log scale labelled 1, 2, 5, 10, 20, 50 ... instead of powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def log_if_wide(ax: Axes, values: Any, ratio: float = 20.0, axis: str = "y") -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > ratio:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        plain_log(ax.yaxis if axis == "y" else ax.xaxis)


def headroom(ax: Axes, factor: float = 1.3) -> None:
    """Room above the data for a legend in the upper corner (linear axes)."""
    if ax.get_yscale() == "linear":
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), high * factor)
