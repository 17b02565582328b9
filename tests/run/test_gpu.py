"""GPU telemetry without a GPU: NVML's values through the adapter (a stand-in pynvml module), the
sampler's gpu.csv and summary block, and the paths without a driver or without the package."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.results.gpu import gpu_figures, read_gpu
from harness.run.gpu import GpuSampler, Nvml, open_nvml
from harness.scenario.thresholds import parse_threshold

MIB = 2**20


class FakePynvml:
    """The pynvml calls the adapter makes, answering as two devices would: device 1 reports no power."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM = 0, 1

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.used = [2048 * MIB, 100 * MIB]
        self.shut = False

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> Any:
        return b"NVIDIA H200" if h == 0 else "NVIDIA A10, PCIe"  # older releases give bytes

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=[87, 3][h], memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=self.used[h], total=[143771 * MIB, 23028 * MIB][h], free=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 312_500  # milliwatts

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return [61, 40][h]

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        assert clock == self.NVML_CLOCK_SM
        return [1980, 1410][h]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=1536 * MIB), SimpleNamespace(pid=77, usedGpuMemory=None)] \
            if h == 0 else []


def test_the_adapter_turns_nvml_structs_and_units_into_numbers() -> None:
    fake = FakePynvml()
    nvml = Nvml(fake)
    first, second = nvml.read()
    assert (first.name, first.utilization_percent, first.memory_used_bytes) == ("NVIDIA H200", 87.0, 2048 * MIB)
    assert first.power_w == 312.5 and first.temperature_c == 61.0 and first.sm_clock_mhz == 1980.0
    assert first.processes == {4242: 1536 * MIB, 77: None}
    assert second.power_w is None and second.name == "NVIDIA A10, PCIe"  # not supported: no reading
    nvml.close()
    assert fake.shut


def test_the_sampler_writes_gpu_csv_and_the_summary_block(tmp_path: Path) -> None:
    fake = FakePynvml()
    sampler = GpuSampler(Nvml(fake), tmp_path / "gpu.csv", t0=0.0, server_pids=lambda: [4242])
    sampler.sample()
    fake.used[0] = 3072 * MIB
    sampler.sample()
    sampler.stop()
    frame = read_gpu(tmp_path)
    assert len(frame) == 2 * 3  # two devices and the server's one process on device 0, per tick
    assert set(frame.loc[frame["pid"].notna(), "pid"]) == {4242}  # pid 77 is not the server's
    block = gpu_figures(frame.assign(t=[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]), 0.0, 5.0)
    assert block is not None
    h200, a10 = block["devices"]
    assert h200["utilization_percent_mean"] == 87.0 and h200["memory_used_mb_peak"] == 3072.0
    assert h200["server_memory_mb_peak"] == 1536.0 and h200["power_w_mean"] == 312.5
    assert a10["power_w_mean"] is None and a10["name"] == "NVIDIA A10  PCIe"
    assert block["utilization_percent_mean"] == 45.0 and block["memory_used_mb_peak"] == 3072.0
    assert parse_threshold("gpu_memory_peak_mb < 4000").evaluate({"gpu": block})["passed"]
    assert gpu_figures(read_gpu(tmp_path / "none"), 0.0, 5.0) is None


def test_without_a_driver_or_the_package_telemetry_is_off_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml, line = open_nvml()  # this machine: nvidia-ml-py installed, no NVIDIA driver
    assert nvml is None and line.startswith("GPU telemetry: off (no NVIDIA driver: ")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if the gpu extra were not installed
    nvml, line = open_nvml()
    assert nvml is None and line == "GPU telemetry: off (nvidia-ml-py is not installed: pip install .[gpu])"



def test_a_run_with_gpu_csv_gets_the_gpu_block_and_report_section(tmp_path: Path) -> None:
    import json

    from harness.analysis.runfolder import analyse_run
    from harness.report.run_page import render
    from harness.results import gpu as gpu_file
    from tests.support.fake_runs import fake_run

    readings = Nvml(FakePynvml()).read()
    lines = "".join(line for t in range(1, 20) for line in gpu_file.format_lines(float(t), readings, {4242}))
    run = fake_run(tmp_path / "run", seed=3, gpu_csv=gpu_file.HEADER + lines)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["gpu"]["devices"][0]["server_memory_mb_peak"] == 1536.0
    page = render(analyse_run(run))
    assert 'id="gpu"' in page and "NVIDIA H200" in page and "server&#x27;s MB peak" in page
