"""GPU telemetry through NVML: every GPU every 0.5 s into gpu.csv, on the run's clock.

NVML comes from the `nvidia-ml-py` package (`pip install .[gpu]`), read through a thin adapter
(`Nvml`) that turns its structs and units into plain numbers (bytes, watts, degrees, MHz) and an
unsupported reading into None, so the sampler and its tests need no driver. Without the package or
a driver, telemetry is off with one line saying why. Per-process GPU memory is kept for the
server's processes (the roles the resource monitor watches).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import gpu as gpu_file
from harness.run.sampler import CsvSampler


@dataclass(frozen=True)
class DeviceReading:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    temperature_c: float | None
    sm_clock_mhz: float | None
    processes: dict[int, int | None]  # pid -> GPU memory it uses (None: NVML does not say)


class Nvml:
    """The few NVML calls the sampler makes, over the `pynvml` module of nvidia-ml-py."""

    def __init__(self, module: Any) -> None:
        self.nv = module
        self.nv.nvmlInit()
        self.handles = [self.nv.nvmlDeviceGetHandleByIndex(i) for i in range(self.nv.nvmlDeviceGetCount())]

    def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except self.nv.NVMLError:
            return None  # not supported on this device (or gone): no reading, not a failed run

    def names(self) -> list[str]:
        out = []
        for handle in self.handles:
            name = self.nv.nvmlDeviceGetName(handle)
            out.append(name.decode() if isinstance(name, bytes) else str(name))
        return out

    def read(self) -> list[DeviceReading]:
        nv, out = self.nv, []
        for index, (handle, name) in enumerate(zip(self.handles, self.names())):
            util = self._read(nv.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(nv.nvmlDeviceGetMemoryInfo, handle)
            power_mw = self._read(nv.nvmlDeviceGetPowerUsage, handle)
            temperature = self._read(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
            clock = self._read(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM)
            procs = self._read(nv.nvmlDeviceGetComputeRunningProcesses, handle) or []
            out.append(DeviceReading(
                index, name, None if util is None else float(util.gpu),
                None if memory is None else int(memory.used), None if memory is None else int(memory.total),
                None if power_mw is None else power_mw / 1000.0,
                None if temperature is None else float(temperature), None if clock is None else float(clock),
                {int(p.pid): (None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs}))
        return out

    def close(self) -> None:
        self._read(self.nv.nvmlShutdown)


def open_nvml() -> tuple[Nvml | None, str]:
    """NVML when a driver and a GPU are there, else None; and the line that says which."""
    try:
        import pynvml
    except ImportError:
        return None, "GPU telemetry: off (nvidia-ml-py is not installed: pip install .[gpu])"
    try:
        nvml = Nvml(pynvml)
    except pynvml.NVMLError as exc:
        return None, f"GPU telemetry: off (no NVIDIA driver: {exc})"
    if not nvml.handles:
        nvml.close()
        return None, "GPU telemetry: off (the NVIDIA driver sees no GPU)"
    return nvml, f"GPU telemetry: {', '.join(f'{i}: {n}' for i, n in enumerate(nvml.names()))} (every 0.5 s, gpu.csv)"


class GpuSampler(CsvSampler):
    """Background thread writing gpu.csv: one row per device per tick and one per server process on
    a device; `latest` holds the last tick's readings for the live metrics."""

    def __init__(self, nvml: Nvml, path: Path, t0: float, server_pids: Callable[[], list[int]],
                 interval: float = 0.5) -> None:
        super().__init__(path, gpu_file.HEADER, t0, interval, "gpu-sampler")
        self.nvml, self.server_pids = nvml, server_pids
        self.latest: list[DeviceReading] = []

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        readings = self.nvml.read()
        try:
            watched = set(self.server_pids())
        except Exception:  # a server gone between ticks has no processes to watch
            watched = set()
        self.write(gpu_file.format_lines(t, readings, watched))
        self.latest = readings

    def stop(self) -> None:
        super().stop()
        self.nvml.close()
