"""The bundled server on a GPU beside the same on the CPU: a short ramp of the `mlp` model each way.

    .venv/bin/python benchmarks/bench_gpu.py [--seconds 20] [--users 32] [--max-batch 32]

For a machine with an NVIDIA GPU (and `pip install .[gpu]` for the telemetry). Starts the bundled
`mlp` server (1 gthread worker, 8 threads, dynamic batching up to --max-batch rows) with
`--device cuda`, ramps closed-model users from 1 to --users through the CLI as a user would
(`python -m harness run SCENARIO`), then the same with `--device cpu`, and prints per device:
successful req/s, p50/p99, the Server-Timing split (queue, infer (with torch.cuda.synchronize, so
real compute time), the rest), and from NVML the GPU's mean utilization, peak memory (the device's
and the server processes') and mean power. Exit 0 when both ran, 2 when a side could not be
measured (no CUDA here: the server refuses --device cuda with exit 2 and says why).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import harness, write_yaml  # noqa: E402


def scenario(path: Path, device: str, seconds: float, users: int, max_batch: int) -> Path:
    return write_yaml(path, {
        "name": f"gpu-{device}",
        "target": {"server": {"model": "mlp", "device": device, "worker_class": "gthread", "threads": 8,
                              "max_batch": max_batch}},
        "load": {"model": "closed", "start": 1, "stages": [{"duration": f"{seconds:g}s", "target": users}],
                 "warmup": "2s"}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each ramp")
    parser.add_argument("--users", type=int, default=32, help="users at the top of the ramp")
    parser.add_argument("--max-batch", type=int, default=32, help="dynamic batching: rows per forward")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as name:
        tmp = Path(name)
        for device in ("cuda", "cpu"):
            out = tmp / device
            run = harness(["run", scenario(tmp / f"{device}.yaml", device, args.seconds, args.users, args.max_batch),
                           "--out", out], out, timeout=600)
            print(f"$ {run.command}: exit {run.exit_code}", flush=True)
            if not run.usable:
                print(f"FAILED TO MEASURE on {device}: {run.why_not}\n{run.output[-2000:]}", file=sys.stderr)
                return 2
            s = run.summary or {}
            split = s.get("server_timing") or {}
            gpu = s.get("gpu") or {}
            device0 = (gpu.get("devices") or [{}])[0]
            rows.append((device, s.get("ok_rps"), s["latency_ms"]["p50"], s["latency_ms"]["p99"],
                         split.get("queue_ms_p50"), split.get("infer_ms_p50"), split.get("other_ms_p50"),
                         gpu.get("utilization_percent_mean"), device0.get("memory_used_mb_peak"),
                         device0.get("server_memory_mb_peak"), device0.get("power_w_mean"),
                         device0.get("name", "-")))

    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    header = ("device", "ok req/s", "p50 ms", "p99 ms", "queue ms", "infer ms", "other ms", "GPU util %",
              "GPU MB peak", "server MB", "power W", "GPU")
    print(f"mlp, 1 worker x 8 threads, max_batch {args.max_batch}, ramp 1 -> {args.users} users over "
          f"{args.seconds:g} s (Server-Timing medians; GPU from NVML every 0.5 s)")
    print("  ".join(f"{h:>11}" for h in header))
    for r in rows:
        print("  ".join(f"{cell(v):>11}" for v in r))
    cuda, cpu = rows
    if cuda[1] and cpu[1]:
        print(f"ok req/s cuda / cpu: {cuda[1] / cpu[1]:.2f}x; infer p50 cuda / cpu: "
              f"{(cuda[5] or 0) / (cpu[5] or 1):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
