"""Engine parity: both engines against the latency the server itself measured, on one server.

    .venv/bin/python benchmarks/bench_parity.py [--rounds 2] [--duration 6] [--quick]

The figures that used to be timing assertions in the Locust end-to-end test (issue 18). One
bundled server with the `sleep` model (50 ms per forward, GIL released), 1 gthread worker x 8
threads (keep-alive), started once; then the threadpool engine and the Locust engine in turn,
`--rounds` times, each a closed loop of 8 users for `--duration` s after 1 s of warm-up, through
`python -m harness run SCENARIO --url URL --set engine=E`. The truth of each request's latency is
what the server measured itself (its handler's Server-Timing `total`, the summary's
`server_timing.server_ms_p50`: the 50 ms model plus parsing); a client can only exceed it by
the HTTP server's own work, loopback and its own overhead.

Prints, per run and per engine (median over its runs): p50, the server's p50, p50 - server p50
(ms), p50 - 50 ms, and successful req/s against the theory 8 threads / 50 ms = 160 req/s (as a
ratio); and between the engines, per round (the two runs measured back to back) and as the
median: Locust p50 - threadpool p50 (ms) and Locust / threadpool req/s. Former test limits, for
reading the figures: each engine within 2 ms of the server's p50, the engines within 2 ms and 10%
of each other, req/s within 10% of 160.

A run that exits other than 0/1 or judges itself invalid is printed with the reason and left out.
--quick is --rounds 1 --duration 4 (about 40 s). Exit 0 when the figures were measured, 2 when
an engine has no usable run. The server runs in its own process group, stopped in a finally block.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import PY, HarnessRun, Proc, harness_run, wait_http, write_yaml  # noqa: E402

SLEEP_MS, THREADS, USERS = 50.0, 8, 8
ENGINES = ("threadpool", "locust")


def figures(run: HarnessRun) -> dict[str, float]:
    s = run.summary
    return {"p50": s["latency_ms"]["p50"], "server_p50": (s.get("server_timing") or {}).get("server_ms_p50"),
            "ok_rps": s["ok_rps"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (threadpool, locust)")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--quick", action="store_true", help="--rounds 1 --duration 4")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 4.0
    theory = THREADS / (SLEEP_MS / 1000)
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    pairs: list[tuple[dict[str, float], dict[str, float]]] = []
    server = Proc("target_server", [PY, "-m", "target_server", "--model", "sleep", "--sleep-ms", f"{SLEEP_MS:g}",
                                    "--workers", "1", "--worker-class", "gthread", "--threads", str(THREADS),
                                    "--port", "0"])
    try:
        with tempfile.TemporaryDirectory(prefix="bench_parity-") as name:
            tmp = Path(name)
            url = server.url()
            wait_http(url + "/v2/health/ready")
            print(f"server: {' '.join(['python'] + server.cmd[1:])} -> {url}", flush=True)
            scenario = write_yaml(tmp / "parity.yaml", {
                "name": "parity", "target": {"endpoint": "/predict", "payload": {"inputs": [[1.0, 2.0, 3.0]]}},
                "load": {"model": "closed", "start": USERS,
                         "stages": [{"duration": f"{args.duration:g}s", "target": USERS}], "warmup": "1s"}})
            print(f"{'round':<6} {'engine':<11} {'p50 ms':>8} {'server p50':>10} {'p50-server':>10} "
                  f"{'p50-50ms':>9} {'ok req/s':>9} {'/ theory':>8}", flush=True)
            for rnd in range(1, args.rounds + 1):
                got: dict[str, dict[str, float]] = {}
                for engine in ENGINES:
                    run = harness_run(scenario, tmp / f"{engine}-{rnd}", url=url, sets={"engine": engine})
                    if not run.usable or figures(run)["server_p50"] is None:
                        print(f"{rnd:<6} {engine:<11} NOT EVIDENCE: {run.why_not or 'no Server-Timing figures'}"
                              f"  ({run.command})", flush=True)
                        continue
                    f = figures(run)
                    got[engine] = f
                    runs[engine].append(f)
                    print(f"{rnd:<6} {engine:<11} {f['p50']:>8.2f} {f['server_p50']:>10.2f} "
                          f"{f['p50'] - f['server_p50']:>+10.2f} {f['p50'] - SLEEP_MS:>+9.2f} {f['ok_rps']:>9.1f} "
                          f"{f['ok_rps'] / theory:>8.3f}", flush=True)
                if len(got) == 2:
                    pairs.append((got["threadpool"], got["locust"]))
                    tp, lo = got["threadpool"], got["locust"]
                    print(f"{'':<6} pair: locust - threadpool p50 {lo['p50'] - tp['p50']:+.2f} ms, "
                          f"locust / threadpool ok req/s {lo['ok_rps'] / tp['ok_rps']:.3f}", flush=True)
    finally:
        server.stop()

    missing = [e for e in ENGINES if not runs[e]]
    print(f"\nper engine (median of its runs; theory {theory:.0f} req/s, model {SLEEP_MS:g} ms):")
    for engine in ENGINES:
        if not runs[engine]:
            continue
        med = {k: statistics.median(r[k] for r in runs[engine]) for k in ("p50", "server_p50", "ok_rps")}
        over = [r["p50"] - r["server_p50"] for r in runs[engine]]
        print(f"  {engine:<11} p50 {med['p50']:.2f} ms = server's {med['server_p50']:.2f} ms "
              f"{statistics.median(over):+.2f} ms (runs {min(over):+.2f}..{max(over):+.2f}); "
              f"{med['p50'] - SLEEP_MS:+.2f} ms over the bare model; ok req/s {med['ok_rps']:.1f} = "
              f"{med['ok_rps'] / theory:.3f} of theory")
    if pairs:
        dp50 = [lo["p50"] - tp["p50"] for tp, lo in pairs]
        rps = [lo["ok_rps"] / tp["ok_rps"] for tp, lo in pairs]
        print(f"between engines (median of {len(pairs)} back-to-back pairs): locust - threadpool p50 "
              f"{statistics.median(dp50):+.2f} ms, locust / threadpool ok req/s {statistics.median(rps):.3f}")
    print("(former test limits, for reading: each engine within 2 ms of the server's p50; engines within "
          "2 ms and 10% of each other; req/s within 10% of theory)")
    if missing:
        print(f"FAILED TO MEASURE: no usable run of {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
