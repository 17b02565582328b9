"""The HTTPS ceiling (issue 12): the harness over TLS ÷ the harness over plain HTTP, same nginx.

One nginx (Debian nginx-light, installed with apt-get when missing) listens twice on loopback and
returns the same fixed JSON body on both: plain HTTP on one port, HTTPS (a self-signed EC P-256
certificate from target_server.tls.self_signed, which the harness trusts as its CA) on the other.
Each round runs the harness closed-loop at the same connections against both listeners, back to
back (plain then TLS), and wrk (installed the same way) likewise, for context: wrk's own
TLS ÷ plain says what TLS costs a C client on this machine. The figure is the median of the
per-round harness ratios; target >= 0.6. Connections are kept alive, so the handshake is paid
once per connection (in the pre-connect), and the ratio measures TLS record costs per request.
A run the harness calls invalid only because its generator used a whole core counts: at the
ceiling the generator is the bottleneck by design, over TLS and plain HTTP alike.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_tls.py [--rounds 3] [--duration 5]
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_tools import Proc, ensure_tools, free_port, harness_run, paired, run_wrk, spread, wait_port  # noqa: E402

from target_server.tls import self_signed  # noqa: E402

TARGET = 0.6
SAME_HEADERS = 'wrk.headers["User-Agent"] = "inference-harness/0.1"\nwrk.headers["Accept"] = "*/*"\n'


def start_nginx(nginx: str, work: Path, workers: str) -> tuple[Proc, str, str, Path]:
    """nginx with a plain and a TLS listener serving the same body; (proc, http url, https url, cert)."""
    cert, key = self_signed(work / "tls")
    plain, tls = free_port(), free_port()
    location = """location / { default_type application/json; return 200 '{"predictions": [[0.0]]}'; }"""
    conf = work / "nginx.conf"
    conf.write_text(f"""daemon off;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{ listen 127.0.0.1:{plain}; {location} }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {location}
    }}
}}
""")
    proc = Proc("nginx", [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")])
    wait_port(plain, proc)
    wait_port(tls, proc)
    return proc, f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", cert


def generator_bound(summary: dict) -> bool:
    """Invalid only because the generator used a whole core: what a ceiling run is meant to be."""
    reasons = summary.get("invalid_reasons") or []
    return bool(reasons) and all("of a core" in r for r in reasons)


def harness_rps(scenario: Path, url: str, out: Path, sets: dict[str, object]) -> tuple[float, str]:
    run = harness_run(scenario, out, url=url, sets=sets)
    if run.summary is None or not (run.usable or generator_bound(run.summary)):
        raise SystemExit(f"harness run is no evidence ({run.why_not}): {run.command}\n{run.output[-3000:]}")
    if run.summary["errors"]:
        raise SystemExit(f"harness run had errors {run.summary.get('errors_by_kind')}: {run.command}")
    return float(run.summary["ok_rps"]), run.command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="plain/TLS pairs per client")
    parser.add_argument("--users", type=int, default=8, help="connections (harness users = wrk -c)")
    parser.add_argument("--processes", type=int, default=1, help="harness generator processes")
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes")
    args = parser.parse_args(argv)
    nginx, wrk = ensure_tools()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as name:
        tmp = Path(name)
        (tmp / "nginx").mkdir()
        server, http_url, https_url, cert = start_nginx(nginx, tmp / "nginx", args.nginx_workers)
        scenario = tmp / "tls.yaml"
        scenario.write_text(yaml.safe_dump({
            "name": "tls-ceiling", "target": {"endpoint": "/", "method": "GET", "scrape_metrics": False},
            "load": {"model": "closed", "start": args.users,
                     "stages": [{"duration": f"{args.duration + 1:g}s", "target": args.users}], "warmup": "1s"},
            "generator": {"processes": args.processes}}, sort_keys=False))
        lua = tmp / "get.lua"
        lua.write_text(SAME_HEADERS)
        threads = min(2, args.users)
        print(f"== HTTPS ceiling: nginx (worker_processes {args.nginx_workers}), fixed JSON body, "
              f"{args.users} keep-alive connections; harness {args.processes} generator process(es)", flush=True)
        mine: list[tuple[float, float]] = []  # (tls, plain)
        theirs: list[tuple[float, float]] = []
        commands: list[str] = []
        try:
            run_wrk(wrk, http_url + "/", threads=threads, conns=args.users, seconds=1, lua=str(lua))  # warm-up
            for r in range(args.rounds):
                w_plain = run_wrk(wrk, http_url + "/", threads=threads, conns=args.users, seconds=args.duration,
                                  lua=str(lua))
                w_tls = run_wrk(wrk, https_url + "/", threads=threads, conns=args.users, seconds=args.duration,
                                lua=str(lua))
                plain, plain_cmd = harness_rps(scenario, http_url, tmp / f"plain-{r}", {})
                tls, tls_cmd = harness_rps(scenario, https_url, tmp / f"tls-{r}", {"target.tls.ca_file": cert})
                mine.append((tls, plain))
                theirs.append((w_tls.rps, w_plain.rps))
                print(f"  round {r + 1}: harness TLS {tls:,.0f} vs plain {plain:,.0f} req/s ({tls / plain:.2f}); "
                      f"wrk TLS {w_tls.rps:,.0f} vs plain {w_plain.rps:,.0f} req/s "
                      f"({w_tls.rps / w_plain.rps:.2f})", flush=True)
                commands = [f"nginx: {shlex.join(server.cmd)}", f"wrk: {w_tls.command}",
                            f"harness (plain): {plain_cmd}", f"harness (TLS): {tls_cmd}"]
        finally:
            server.stop()
    ratio = paired(mine)[0]
    print("\ncommands (last round):\n  " + "\n  ".join(commands))
    print(f"\nharness over TLS / over plain HTTP: {spread(mine)}   target >= {TARGET}   "
          f"{'PASS' if ratio >= TARGET else 'FAIL'}")
    print(f"wrk over TLS / over plain HTTP (context): {spread(theirs)}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
