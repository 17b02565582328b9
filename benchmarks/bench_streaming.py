"""Token timing accuracy and the streaming ceiling (issue 13), against benchmarks/stream_server.py.

Accuracy: the harness streams chat completions from the fixed-timing server at 100 and at 1,000
concurrent streams (closed model, one user per stream, reached by a ramp), each request with its
own X-Request-ID, and its TTFT and ITL p50 are compared with the truth taken from the server's
own record of when it wrote each token of each request (GET /stats/writes), not from its
nominal settings, since under load the server falls behind: true TTFT = the server's first
write - the request's intended send (both on this machine's CLOCK_MONOTONIC, the run's
t0_monotonic joining them), true ITL = the gaps between the server's writes. What is left is
what the harness adds: the kernel's delivery and its own time to read and stamp each token.
Targets: at 100 streams TTFT p50 within 1 ms and ITL p50 within 0.3 ms of that truth; at 1,000
within 5 ms and 1 ms, or the run marked itself invalid.

Ceiling: streamed tokens/s the harness reads at 64 concurrent streams from the server in burst
mode (TTFT = ITL = 0: each answer of 256 tokens leaves in one write, so the server costs little
and the client is the bottleneck), and the same for the peer, GuideLLM (vllm-project/guidellm,
the streaming benchmark that runs here: aiperf and vLLM's `bench serve` need far more), on the
same server at the same concurrency, back to back; the figure is harness ÷ GuideLLM. GuideLLM
lives in its own virtual environment (it pulls torch, ~6 GB), made once by hand:

    python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install guidellm

and is given a tiny local tokenizer this script builds (its synthetic prompts need one; the
token counts come from the server's usage either way, and nothing is downloaded).

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_streaming.py [--seconds 10] [--skip-1000] \
        [--guidellm /tmp/peer-venv/bin/guidellm]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
from bench_tools import PY, Proc, harness_run, write_yaml  # noqa: E402

from harness.results.tokens import read_streams  # noqa: E402

SERVER = Path(__file__).resolve().parent / "stream_server.py"
# (streams, TTFT ms, ITL ms, output tokens, generator processes, TTFT and ITL p50 tolerance ms)
ACCURACY = [(100, 50.0, 20.0, 32, 1, 1.0, 0.3), (1000, 100.0, 200.0, 16, 2, 5.0, 1.0)]


def start_server(ttft_ms: float, itl_ms: float) -> tuple[Proc, str]:
    proc = Proc("stream_server", [PY, str(SERVER), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)])
    return proc, proc.url(timeout=30)


def server_json(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as answer:
        return json.loads(answer.read())


def scenario(work: Path, url: str, streams: int, tokens: int, processes: int, seconds: float, name: str) -> Path:
    ramp = min(3.0, seconds / 3)
    return write_yaml(work / f"{name}.yaml", {
        "name": name,
        "target": {"url": url, "api": "openai-chat", "timeout": "30s", "request_id": {"header": "X-Request-ID"},
                   "prompts": {"input_tokens": {"mean": 32}, "output_tokens": {"mean": tokens}}},
        "generator": {"processes": processes},
        "load": {"model": "closed", "stages": [{"duration": f"{ramp}s", "target": streams},
                                               {"duration": f"{seconds - ramp}s", "target": streams}]},
    })


def paired_truth(run_dir: Path, t0: float, writes: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Per successful request found in the server's record: the harness's TTFT and gaps beside the
    true ones (ms), and the delivery delay of each first token (harness stamp - server write)."""
    streams = read_streams(run_dir)
    ok = streams[(streams["error"].fillna("") == "") & streams["request_id"].isin(list(writes))]
    out: dict[str, list] = {"ttft": [], "true_ttft": [], "itl": [], "true_itl": [], "delivery": []}
    for rid, intended, first, gaps in zip(ok["request_id"], ok["intended"], ok["first_token"], ok["gaps"]):
        written = np.array(writes[rid])
        if written.size == 0:
            continue
        out["ttft"].append((first - intended) * 1000.0)
        out["true_ttft"].append((written[0] - t0 - intended) * 1000.0)
        out["delivery"].append((first + t0 - written[0]) * 1000.0)
        out["itl"].append(gaps)
        out["true_itl"].append(np.diff(written) * 1000.0)
    return {k: np.concatenate(v) if k in ("itl", "true_itl") else np.array(v) for k, v in out.items()}


def accuracy(work: Path, seconds: float, skip_1000: bool) -> bool:
    ok = True
    print("accuracy: harness p50 - server's own record p50 (ms)")
    for streams, ttft, itl, tokens, processes, tolerance_ttft, tolerance_itl in ACCURACY:
        if skip_1000 and streams >= 1000:
            continue
        proc, url = start_server(ttft, itl)
        try:
            run = harness_run(scenario(work, url, streams, tokens, processes, seconds, f"acc-{streams}"),
                              work / f"acc-{streams}", timeout=seconds + 120)
            stats, writes = server_json(url, "/stats"), server_json(url, "/stats/writes")
        finally:
            proc.stop()
        if run.summary is None:
            print(f"  {streams:>5} streams: no summary ({run.why_not})\n{run.output[-2000:]}")
            ok = False
            continue
        tok = run.summary.get("tokens") or {}
        pairs = paired_truth(run.out, run.summary["t0_monotonic"], writes)
        p50 = {k: float(np.median(v)) if v.size else float("nan") for k, v in pairs.items()}
        d_ttft, d_itl = p50["ttft"] - p50["true_ttft"], p50["itl"] - p50["true_itl"]
        within = abs(d_ttft) <= tolerance_ttft and abs(d_itl) <= tolerance_itl
        verdict = ("PASS" if within else "invalid run (allowed)" if not run.summary["valid"] else "FAIL")
        ok &= within or not run.summary["valid"]
        print(f"  {streams:>5} streams (TTFT {ttft:g} ms, ITL {itl:g} ms, {tokens} tokens, {processes} proc, "
              f"{len(pairs['ttft'])} requests paired): TTFT p50 {p50['ttft']:.3f} vs true {p50['true_ttft']:.3f} "
              f"({d_ttft:+.3f}, within {tolerance_ttft:g}); ITL p50 {p50['itl']:.3f} vs true {p50['true_itl']:.3f} "
              f"({d_itl:+.3f}, within {tolerance_itl:g}) -> {verdict}")
        delivery = pairs["delivery"]
        print(f"        first-token delivery (harness stamp - server write) p50 {np.median(delivery):.3f} "
              f"p99 {np.percentile(delivery, 99):.3f} ms; summary TTFT p50 {tok['ttft_ms']['p50']} ITL p50 "
              f"{tok['itl_ms']['p50']}; server behind schedule p50 {stats['late_ms']['p50']} ms; "
              f"{tok['output_tokens_per_s']:.0f} tok/s; valid {run.summary['valid']}; generator cpu "
              f"{run.summary['generator']['cpu_percent_mean']}%, rss {run.summary['generator']['rss_mb_max']} MB")
        if not run.summary["valid"]:
            print("    invalid because: " + "; ".join(run.summary["invalid_reasons"]))
    return ok


TOKENIZER = """
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
import random, sys
random.seed(0)
words = "the quick brown fox jumps over lazy dog data model token server stream request".split()
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator([" ".join(random.choice(words) for _ in range(50)) for _ in range(200)],
                        trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<s>", "</s>"],
                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(sys.argv[1])
"""


def guidellm_rate(guidellm: Path, work: Path, url: str, streams: int, tokens: int, seconds: float) -> float | None:
    """GuideLLM's output tokens/s at `streams` concurrent streams (None when it failed)."""
    import os
    import subprocess

    python = guidellm.parent / "python"
    tokenizer = work / "tokenizer"
    subprocess.run([str(python), "-c", TOKENIZER, str(tokenizer)], check=True, capture_output=True, timeout=300)
    result = work / "guidellm.json"
    command = [str(guidellm), "run",
               "--backend", f"kind=openai_http,target={url},model=fixed-timing,request_format=/v1/completions,"
                            "validate_backend=false",
               "--profile", f"kind=concurrent,streams={streams}",
               "--constraint", f"kind=max_duration,seconds={seconds:g}",
               "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
               "--data", f"kind=synthetic_text,prompt_tokens=32,output_tokens={tokens}",
               "--output", f"kind=json,path={result}", "--disable-console", "--disable-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 6 + 300, env=env)
    if done.returncode != 0 or not result.exists():
        print(f"  guidellm failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return None
    metrics = json.loads(result.read_text())["benchmarks"][0]["metrics"]
    ttft = metrics["time_to_first_token_ms"]["successful"]["percentiles"]["p50"]
    print(f"  guidellm: {metrics['output_tokens_per_second']['total']['mean']:.0f} output tokens/s, "
          f"TTFT p50 {ttft:.1f} ms")
    return float(metrics["output_tokens_per_second"]["total"]["mean"])


def ceiling(work: Path, seconds: float, guidellm: Path | None) -> None:
    streams, tokens = 64, 256
    proc, url = start_server(0.0, 0.0)
    try:
        run = harness_run(scenario(work, url, streams, tokens, 1, seconds, "ceiling"), work / "ceiling",
                          timeout=seconds + 120)
        harness_rate = (run.summary or {}).get("tokens", {}).get("output_tokens_per_s")
        print(f"ceiling at {streams} streams x {tokens} tokens, burst server:")
        print(f"  harness:  {harness_rate:.0f} output tokens/s (generator cpu "
              f"{(run.summary or {}).get('generator', {}).get('cpu_percent_mean')}%, valid "
              f"{(run.summary or {}).get('valid')})")
        if guidellm is not None:
            peer = guidellm_rate(guidellm, work, url, streams, tokens, seconds)
            if peer and harness_rate:
                print(f"  harness / guidellm = {harness_rate / peer:.2f}")
        else:
            print("  (no --guidellm: the peer was not run)")
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-1000", action="store_true", help="only the 100-stream accuracy run")
    parser.add_argument("--guidellm", type=Path, help="GuideLLM's executable, in its own venv (the docstring)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        work = Path(tmp)
        ok = accuracy(work, args.seconds, args.skip_1000)
        ceiling(work, args.seconds, args.guidellm)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
