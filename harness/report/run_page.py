"""The per-run HTML report: one self-contained `report.html` rendered purely from a run folder."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from harness.analysis.runfolder import RunAnalysis, analyse_run
from harness.report import charts
from harness.report.html import badge, esc, fmt, image, page, table, tiles
from harness.results import layout
from harness.results.summary import Summary


def write_report(run_dir: Path) -> Path:
    """Analyse the run folder and write its report.html; returns the path written."""
    ra = analyse_run(Path(run_dir))
    return layout.atomic_write(ra.run_dir / layout.REPORT, render(ra))


def verdict_badges(s: Summary) -> str:
    out = []
    if s["thresholds"]:
        out.append(badge("PASSED" if s["passed"] else "FAILED thresholds", "pass" if s["passed"] else "fail"))
    else:
        out.append(badge("no thresholds", "neutral"))
    out.append(badge("VALID" if s["valid"] else "INVALID", "pass" if s["valid"] else "fail"))
    if s.get("partial"):
        out.append(badge("PARTIAL (stopped early)", "warn"))
    return '<div class="badges">' + "".join(out) + "</div>"


def knee_summary(ra: RunAnalysis) -> str:
    if ra.knee is None:
        return "-"
    if ra.knee["knee"] is None:
        return "none found"
    return f"{fmt(ra.knee['knee']['offered'], 4)} {ra.knee['unit']}"


def headline(ra: RunAnalysis) -> str:
    s, lat = ra.summary, ra.summary["latency_ms"]
    figures = [("requests / second", fmt(s["rps"], 4)), ("successful req/s", fmt(s["ok_rps"], 4)),
               ("p50 latency", fmt(lat["p50"], unit="ms")), ("p95 latency", fmt(lat["p95"], unit="ms")),
               ("p99 latency", fmt(lat["p99"], unit="ms")), ("max latency", fmt(lat["max"], unit="ms")),
               ("error rate", f"{s['error_rate']:.2%}"), ("requests measured", fmt(s["requests"])),
               ("knee", knee_summary(ra)),
               ("saturation", fmt(ra.knee["saturation_rps"], 4, "req/s") if ra.knee else "-"),
               ("server CPU (mean)", fmt(s["server"]["cpu_percent_mean"], unit="%")),
               ("req per server CPU-s", fmt(ra.efficiency, 4))]
    thresholds = table(["threshold", "observed", "result"],
                       [(t["expression"], fmt(t["observed"], 4), (badge("PASS", "pass") if t["passed"]
                                                                   else badge("FAIL", "fail"),))
                        for t in s["thresholds"]]) if s["thresholds"] else ""
    reasons = "".join(f"<li>{esc(r)}</li>" for r in s["invalid_reasons"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in s["notes"])
    errors = ", ".join(f"{k}: {v}" for k, v in s["errors_by_kind"].items())
    return (f'<div class="box">{verdict_badges(s)}{tiles(figures)}'
            + (f'<p class="note">errors by kind: {esc(errors)}</p>' if errors else "")
            + thresholds
            + (f"<h3>Why the run is invalid</h3><ul class='tight'>{reasons}</ul>" if reasons else "")
            + (f"<h3>Notes</h3><ul class='tight'>{notes}</ul>" if notes else "")
            + "</div>")


def setup(ra: RunAnalysis) -> str:
    s = ra.summary
    target = s.get("target") or {}
    model = s["load_model"] + (f" ({s['arrival']} arrivals)" if s.get("arrival") else "")
    stages = "; ".join(f"[{i}] {ra.plan.describe_stage(i)}" for i in range(len(ra.plan.segments))) if ra.plan else "-"
    run_rows = [("scenario", f"{s['name']} ({s.get('scenario_file', '-')})"), ("started", s.get("started_at", "-")),
                ("engine", s.get("engine", "-")), ("load model", model), ("stages", stages),
                ("warm-up / measured", f"{s['warmup_s']:g} s / {s['measured_s']:g} s"),
                ("generator processes", s.get("generator_processes", "-")),
                ("target", f"{target.get('url', '-')}{target.get('endpoint', '')}"
                           + (" (bundled server)" if target.get("bundled") else " (external)")),
                ("server settings", target.get("server") or "not started by the harness")]
    env = s.get("environment") or {}
    env_rows = [("Python", env.get("python")), ("torch", env.get("torch")), ("CPU count", env.get("cpu_count")),
                ("platform", env.get("platform")), ("harness commit", env.get("harness_commit"))]
    return ('<div class="cols"><div><h3>Run</h3>' + table(None, run_rows, numeric_from=9)
            + '</div><div><h3>Environment</h3>' + table(None, env_rows, numeric_from=9) + "</div></div>")


def stages_table(s: Summary) -> str:
    rows = [(f"[{st['index']}] {st['description']}", f"{st['start_s']:g}-{st['end_s']:g} s", fmt(st["requests"]),
             fmt(st["rps"], 4), fmt(st["latency_ms"]["p50"]), fmt(st["latency_ms"]["p95"]),
             fmt(st["latency_ms"]["p99"]), fmt(st["latency_ms"]["max"]), f"{st['error_rate']:.2%}")
            for st in s["stages"]]
    return table(["stage (measured part)", "window", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                  "errors"], rows)


def names_table(s: Summary) -> str:
    """Every figure per named kind of request (summary.json's by_name), like Locust's per-name table."""
    rows = [(name, fmt(f["requests"]), fmt(f["rps"], 4), fmt(f["latency_ms"]["p50"]), fmt(f["latency_ms"]["p95"]),
             fmt(f["latency_ms"]["p99"]), fmt(f["latency_ms"]["max"]), f"{f['error_rate']:.2%}")
            for name, f in (s.get("by_name") or {}).items()]
    return table(["name", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], rows)


def resources_text(ra: RunAnalysis) -> str:
    s = ra.summary
    rows = [(f"worker {w['pid']}", fmt(w["cpu_percent_mean"]), fmt(w["cpu_percent_max"]), fmt(w["rss_mb_max"]),
             w["threads_max"]) for w in s["server"]["workers"]]
    rows += [(f"master {m['pid']}", fmt(m["cpu_percent_mean"]), fmt(m["cpu_percent_max"]), fmt(m["rss_mb_max"]),
              m["threads_max"]) for m in s["server"]["master"]]
    rows += [(f"generator {g['pid']}", fmt(g["cpu_percent_mean"]), fmt(g["cpu_percent_max"]), fmt(g["rss_mb_max"]),
              g["threads_max"]) for g in s["generator"]["processes"]]
    process = (s.get("target") or {}).get("process") or {}
    source = f"<p class='note'>{esc(process['note'])}.</p>" if process.get("note") else ""
    eff = (f"<p>The server answered <b>{fmt(ra.efficiency, 4)} requests per CPU-second</b> over the measured "
           "window (requests / CPU time of the master and all workers).</p>") if ra.efficiency else (
        "" if source else "<p class='note'>The harness did not start the target and knew no process of it, so it "
                          "has no server CPU or memory to show.</p>")
    return source + eff + (table(["process (measured window)", "CPU % mean", "CPU % max", "RSS MB max", "threads"], rows)
                  if rows else "")


def gpu_text(s: Summary) -> str:
    """Per device over the measured window (summary.json's `gpu`)."""
    rows = [(f"{d['index']}: {d['name']}", fmt(d["utilization_percent_mean"]), fmt(d["memory_used_mb_peak"], 4),
             fmt(d["memory_total_mb"], 4), fmt(d["server_memory_mb_peak"], 4), fmt(d["power_w_mean"]),
             fmt(d["temperature_c_max"])) for d in (s.get("gpu") or {}).get("devices", [])]
    return table(["GPU (measured window)", "util % mean", "memory MB peak", "of MB", "server's MB peak",
                  "power W mean", "temp °C max"], rows)


def knee_section(ra: RunAnalysis) -> str:
    if ra.knee is None:
        return ("<p class='note'>Not applicable: the measured window tested fewer than three load levels "
                "(the knee needs a ramp).</p>")
    k = ra.knee
    levels = table([f"offered ({k['unit']})", "seconds", "req/s", "successful req/s", "p50 ms", "p95 ms",
                    "p99 ms", "errors"],
                   [(fmt(r.offered), int(r.seconds), fmt(r.rps, 4), fmt(r.ok_rps, 4), fmt(r.p50_ms), fmt(r.p95_ms),
                     fmt(r.p99_ms), f"{r.error_rate:.2%}") for r in k["levels"].itertuples()], numeric_from=0)
    return (f"<p><b>{esc(k['text'])}</b>. Saturation throughput: <b>{fmt(k['saturation_rps'], 4)} req/s</b>.</p>"
            f"<p class='note'>Rule: {esc(k['rule'])}</p>" + image(charts.knee_chart(ra), "knee chart") + levels)


def timing_section(ra: RunAnalysis) -> str:
    split = ra.summary.get("server_timing")
    if not split:
        return "<p class='note'>The target sent no <code>Server-Timing</code> header.</p>"
    outside = ""
    if split.get("server_ms_p50") is not None:
        outside = (f" The server's handler took <b>{fmt(split['server_ms_p50'])} ms</b> in all (median), so "
                   f"<b>{fmt(split['outside_server_ms_p50'])} ms</b> were spent outside it: the HTTP server, "
                   "the network and the client's own measurement overhead.")
    return (f"<p>Median split of the time on the wire: server queue <b>{fmt(split['queue_ms_p50'])} ms</b>, "
            f"inference <b>{fmt(split['infer_ms_p50'])} ms</b>, the rest (HTTP, parsing, network, client) "
            f"<b>{fmt(split['other_ms_p50'])} ms</b>.{outside}</p>"
            + image(charts.timing_chart(ra), "Server-Timing split"))


def little_section(ra: RunAnalysis) -> str:
    lc = ra.little
    skipped = "" if not lc["skipped"] else (
        f" {lc['skipped']} busy second(s) were not checked: their requests (or the previous second's) took "
        "more than a tenth of a second on average, too long for one-second windows.")
    if not lc["windows"]:
        return (f"<p class='note'>No second could be checked (too few requests).{skipped}</p>"
                + image(charts.little_chart(ra), "Little's law check"))
    verdict = "consistent" if lc["consistent"] else "NOT consistent"
    sides = ("planned users against measured throughput x mean time in the system" if ra.unit == "users"
             else "measured requests in the system against the planned rate x measured mean time")
    return (f"<p>L = λ·W ({sides}) held within ±10% in <b>{lc['within']} of {lc['windows']}</b> measured "
            f"seconds (median ratio {lc['median_ratio']:.3f}, worst {lc['worst_ratio']:.3f} at "
            f"t = {lc['worst_t']:g} s): the measurement is <b>{verdict}</b>. Little's law holds for any "
            "stable system, so a failure points at the measurement (lost sample rows, a generator too busy "
            f"to keep its schedule or its users in requests), not at the server.{skipped}</p>"
            + image(charts.little_chart(ra), "Little's law check"))


def soak_section(ra: RunAnalysis, soak: dict[str, Any]) -> str:
    kind = {"stable": "pass", "drifting": "warn", "leaking": "fail"}[soak["verdict"]]
    evidence = "".join(f"<li>{esc(e)}</li>" for e in soak["evidence"])
    return (f"<p>{badge(soak['verdict'].upper(), kind)}</p><ul class='tight'>{evidence}</ul>"
            f"<p class='note'>Rule: {esc(soak['rule'])}</p>" + image(charts.soak_chart(ra), "soak"))


def tokens_section(ra: RunAnalysis) -> str:
    t = ra.summary.get("tokens") or {}
    rows = [(label, *(fmt((t.get(key) or {}).get(stat)) for stat in ("p50", "p90", "p95", "p99", "max", "mean")))
            for key, label in (("ttft_ms", "TTFT"), ("ttfc_ms", "time to first content"), ("tpot_ms", "TPOT"),
                               ("itl_ms", "ITL"))]
    counted = ("" if t.get("counted_by") == "usage" else
               " <b>Output tokens were counted by chunks</b>: the server sent no usage, and a chunk may carry "
               "more than one token.")
    good = ra.summary.get("goodput")
    goodput = "" if not good else (
        f" Goodput: <b>{fmt(good['rps'], 4)} req/s</b>, {fmt(100 * (good['fraction'] or 0), 3)}% of the requests "
        f"met every objective ({esc(', '.join(f'{k} <= {v:g}' for k, v in good['slo'].items()))}).")
    return (f"<p>{t.get('output_tokens')} output tokens ({fmt(t.get('output_tokens_per_s'), 4)}/s), "
            f"{t.get('input_tokens') if t.get('input_tokens') is not None else '-'} input tokens in the measured "
            f"window.{counted}{goodput} Definitions: <a href='https://github.com/vllm-project/vllm/blob/main/"
            "benchmarks/benchmark_serving.py'>vLLM's serving benchmark</a>; every time from the intended send.</p>"
            + table(["ms", "p50", "p90", "p95", "p99", "max", "mean"], rows, numeric_from=1)
            + image(charts.token_timing_chart(ra), "token timing over time")
            + image(charts.token_distribution_chart(ra), "token latency distributions")
            + (image(charts.goodput_chart(ra), "goodput against offered load") if good else ""))


def render(ra: RunAnalysis) -> str:
    s = ra.summary
    sections: list[tuple[str, str, str]] = [
        ("load", "Load and errors over time",
         image(charts.load_chart(ra), "load over time")
         + "<p class='note'>Grey: warm-up (excluded from the figures). Dashed lines: stage boundaries; "
           "[k] is the stage in force from there on.</p>" + stages_table(s)),
        *([("names", "By request name", names_table(s))] if s.get("by_name") else []),
        ("latency", "Latency over time", image(charts.latency_chart(ra), "latency over time")),
        *([("tokens", "Tokens: TTFT, ITL, tokens/s and goodput", tokens_section(ra))] if ra.tokens else []),
        ("distribution", "Latency distribution", image(charts.spectrum_chart(ra), "latency spectrum")),
        ("knee", "Knee and saturation", knee_section(ra)),
        ("resources", "Server and generator resources",
         image(charts.resources_chart(ra), "resources") + resources_text(ra)),
        ("timing", "Server-Timing split", timing_section(ra)),
    ]
    gpu = charts.gpu_chart(ra)
    if gpu is not None:
        sections.insert(-1, ("gpu", "GPU", gpu_text(s) + image(gpu, "GPU utilization and memory")))
    prometheus = charts.prometheus_chart(ra)
    if prometheus is not None:
        sections.append(("prometheus", "What the server's /metrics said",
                         "<p class='note'>Scraped about once a second from the target's Prometheus endpoint "
                         "(metrics.csv); dashed black lines are the client's view of the same seconds.</p>"
                         + image(prometheus, "Prometheus metrics")))
    sections.append(("little", "Measurement check: Little's law", little_section(ra)))
    if ra.soak is not None:
        sections.append(("soak", "Soak: drift and memory growth", soak_section(ra, ra.soak)))
    nav = "<nav>" + "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections) + "</nav>"
    body = "".join(f'<h2 id="{key}">{esc(title)}</h2>{content}' for key, title, content in sections)
    generated = dt.datetime.now().isoformat(timespec="seconds")
    return page(f"{s['name']} - run report", (
        f"<h1>Run report: {esc(s['name'])}</h1>"
        f"<p class='sub'>{esc(s.get('started_at', ''))} · {esc(ra.run_dir)} · "
        f"{esc(s['load_model'])} model, {esc(s.get('engine', ''))} engine · "
        f"{esc((s.get('target') or {}).get('server') or (s.get('target') or {}).get('url', ''))}</p>"
        + headline(ra) + setup(ra) + nav + body
        + f"<p class='note'>Generated {generated} from the run folder; re-render with "
          f"<code>python -m harness report {esc(ra.run_dir)}</code>.</p>"))
