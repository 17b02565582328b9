"""The bundled generative model's serving strategies side by side (issue 16), and its cost.

Cost, in process (torch threads as a one-worker server uses them): prefill ms per prompt token
(a 256-token prompt in chunks of 64) and decode ms per step at batch 1 and 32 (every row 256
positions long).

Strategies, over HTTP: the bundled server (`python -m target_server --model tinylm`, one gthread
worker with 40 threads) under each setting in turn, driven by `harness run` with 32 closed-loop
chat streams (32-word prompts, 64 tokens out): one generation at a time (`max_batch 1, lock
global`, the tutorial's lock) and continuous batching at `max_batch` 8, 16 and 32 (torch threads: the server's default, one per
core, unless named). The baseline of the ratios is the faster of one-at-a-time's two thread
settings (on two cores a single stream's token came every 2.4 ms with one torch thread and every
5.3 ms with two, their threads contending with the request thread and the client). (Unbatched
streams forwarding concurrently, `max_batch 1, lock none`, are left out: 32 of them oversubscribe
two cores so badly that, tried once, none of their first requests finished within 13 s.) Rounds interleave the settings so machine noise
hits each alike. Printed per setting: output tokens/s, ITL p50, TTFT p50/p99 (the harness's own
figures) and the batch sizes the server reports in /metrics; then the ratios the issue targets:
output tokens/s >= 3x and ITL p50 <= 2x those of one generation at a time.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_tinylm.py [--seconds 20] [--rounds 2]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
from bench_tools import PY, Proc, harness_run, write_yaml  # noqa: E402

from target_server.config import available_cores  # noqa: E402
from target_server.generative.tinylm import CachedModel, Size, TinyLM  # noqa: E402

STREAMS = 32
ONE_AT_A_TIME = "one at a time (max_batch 1, lock global)"
SETTINGS = {
    f"{ONE_AT_A_TIME}, torch threads 1": ["--max-batch", "1", "--lock", "global", "--torch-threads", "1"],
    f"{ONE_AT_A_TIME}, torch threads 2": ["--max-batch", "1", "--lock", "global", "--torch-threads", "2"],
    "continuous (max_batch 8)": ["--max-batch", "8"],
    "continuous (max_batch 16)": ["--max-batch", "16"],
    "continuous (max_batch 32)": ["--max-batch", "32"],
    "continuous (max_batch 32), torch threads 1": ["--max-batch", "32", "--torch-threads", "1"],
}


def model_cost(repeats: int = 20) -> None:
    torch.set_num_threads(available_cores())
    module = TinyLM(Size()).seed_weights().eval()
    model = CachedModel(module, STREAMS)
    prompt = torch.randint(32, 127, (256,))
    with torch.inference_mode():
        prefill = []
        for _ in range(5):
            started = time.perf_counter()
            for row in range(STREAMS):
                for at in range(0, 256, 64):
                    model.prefill(row, prompt[at:at + 64], at)
            prefill.append((time.perf_counter() - started) / (STREAMS * 256))
        print(f"model: tinylm d_model {module.size.d_model}, {module.size.layers} layers, "
              f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f} M parameters, "
              f"torch threads {torch.get_num_threads()}")
        print(f"  prefill: {statistics.median(prefill) * 1e3:.3f} ms per prompt token (chunks of 64)")
        for batch in (1, STREAMS):
            tokens, lengths = torch.randint(32, 127, (batch,)), torch.full((batch,), 256)
            steps = []
            for _ in range(repeats):
                started = time.perf_counter()
                model.decode(tokens, lengths)
                steps.append(time.perf_counter() - started)
            print(f"  decode at batch {batch:>2}: {statistics.median(steps) * 1e3:.2f} ms per step "
                  f"({batch / statistics.median(steps):.0f} tokens/s)")


def batch_sizes(url: str) -> str:
    """Mean and largest decode batch from the server's generation_batch_size histogram."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    total = float(re.search(r"^generation_batch_size_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^generation_batch_size_count (\S+)$", text, re.M).group(1))
    buckets = [(float(le), float(n)) for le, n in
               re.findall(r'^generation_batch_size_bucket\{le="([^"+]+)"\} (\S+)$', text, re.M)]
    largest = next((le for le, n in buckets if n >= count), None)
    return f"mean {total / count:.1f}, all <= {largest:g}" if count else "no decode steps"


def measure(flags: list[str], seconds: float, work: Path, name: str) -> dict[str, float | str]:
    server = Proc("tinylm", [PY, "-m", "target_server", "--model", "tinylm", "--port", "0", "--worker-class",
                             "gthread", "--threads", "40", "--queue-limit", "64", "--request-timeout-s", "120",
                             *flags])
    try:
        url = server.url()
        scenario = write_yaml(work / f"{name}.yaml", {
            "name": name,
            "target": {"url": url, "api": "openai-chat", "timeout": "120s",
                       "prompts": {"input_tokens": {"mean": 32}, "output_tokens": {"mean": 64}}},
            "engine": "threadpool",
            "load": {"model": "closed", "start": STREAMS, "stages": [{"duration": f"{seconds:g}s", "target": STREAMS}],
                     "warmup": "5s"},
        })
        run = harness_run(scenario, work / name, timeout=seconds + 300)
        sizes = batch_sizes(url)
    finally:
        server.stop()
    if run.summary is None:
        raise SystemExit(f"{name}: the harness run failed: {run.why_not}\n{run.output[-2000:]}")
    return {"tokens_s": run.figure("tokens", "output_tokens_per_s") or 0.0,
            "itl_p50": run.figure("tokens", "itl_ms", "p50") or 0.0,
            "ttft_p50": run.figure("tokens", "ttft_ms", "p50") or 0.0,
            "ttft_p99": run.figure("tokens", "ttft_ms", "p99") or 0.0,
            "errors": run.figure("errors") or 0.0, "valid": "" if run.usable else f" [{run.why_not}]",
            "batches": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (after 5 s warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every setting, interleaved")
    parser.add_argument("--skip-cost", action="store_true", help="skip the in-process model cost")
    args = parser.parse_args()
    if not args.skip_cost:
        model_cost()
    results: dict[str, list[dict[str, float | str]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-tinylm-") as tmp:
        for round_ in range(args.rounds):
            for i, (name, flags) in enumerate(SETTINGS.items()):
                results[name].append(measure(flags, args.seconds, Path(tmp), f"r{round_}-s{i}"))
                print(f"  round {round_ + 1}: {name} done", file=sys.stderr, flush=True)
    print(f"\n{STREAMS} concurrent chat streams, 32-word prompts, 64 tokens out, {args.seconds:g} s x "
          f"{args.rounds} rounds (medians over rounds)")
    print(f"{'setting':<48} {'tokens/s':>9} {'ITL p50':>8} {'TTFT p50':>9} {'TTFT p99':>9}  batch sizes")
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        med[name] = {k: statistics.median(float(r[k]) for r in runs)
                     for k in ("tokens_s", "itl_p50", "ttft_p50", "ttft_p99", "errors")}
        m = med[name]
        notes = "".join(str(r["valid"]) for r in runs) + (f" [{m['errors']:g} errors]" if m["errors"] else "")
        print(f"{name:<48} {m['tokens_s']:>9.0f} {m['itl_p50']:>6.1f}ms {m['ttft_p50']:>7.0f}ms "
              f"{m['ttft_p99']:>7.0f}ms  {runs[-1]['batches']}{notes}")
    baseline = max((name for name in med if name.startswith(ONE_AT_A_TIME)), key=lambda n: med[n]["tokens_s"])
    base = med[baseline]
    print(f"\nagainst {baseline} (targets: tokens/s >= 3x, ITL p50 <= 2x):")
    for name, m in med.items():
        if name.startswith(ONE_AT_A_TIME):
            continue
        speed = m["tokens_s"] / base["tokens_s"] if base["tokens_s"] else float("nan")
        itl = m["itl_p50"] / base["itl_p50"] if base["itl_p50"] else float("nan")
        print(f"  {name:<48} tokens/s {speed:5.3f}x [{'met' if speed >= 3 else 'NOT met'}]   "
              f"ITL p50 {itl:5.3f}x [{'met' if itl <= 2 else 'NOT met'}]")


if __name__ == "__main__":
    main()
