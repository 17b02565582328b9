"""Tables printed on the terminal: a run's summary."""
from __future__ import annotations

from typing import Any

from harness.results.summary import Summary


def summary_table(summary: Summary) -> str:
    """The human summary printed at the end of a run."""
    lat = summary["latency_ms"]

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"{summary['name']}: {summary['requests']} requests in {summary['measured_s']:.1f} s measured "
        f"({summary['load_model']} model, {summary['engine']} engine)",
        f"  throughput  {summary['rps'] or 0:.1f} req/s   errors {summary['errors']} "
        f"({summary['error_rate']:.2%})" + (f"  {summary['errors_by_kind']}" if summary["errors"] else ""),
        f"  latency ms  p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p95 {ms(lat['p95'])}  "
        f"p99 {ms(lat['p99'])}  p99.9 {ms(lat['p999'])}  max {ms(lat['max'])}",
    ]
    lines += token_lines(summary, ms)
    if summary["stages"]:
        lines.append("  stages:")
        for st in summary["stages"]:
            lines.append(f"    [{st['index']}] {st['description']:<34} {st['rps'] or 0:>9.1f} req/s  "
                         f"p95 {ms(st['latency_ms']['p95']):>8} ms  errors {st['errors']}")
    by_name = summary.get("by_name") or {}
    if by_name:
        lines.append("  by name:")
        for name, fig in by_name.items():
            lines.append(f"    {name:<24} {fig['requests']:>8} requests  {fig['rps'] or 0:>9.1f} req/s  "
                         f"p50 {ms(fig['latency_ms']['p50']):>8}  p95 {ms(fig['latency_ms']['p95']):>8} ms  "
                         f"errors {fig['errors']}")
    data = summary.get("dataset")
    if data:
        lines.append(f"  dataset     {data['sent']} of {data['requests']} requests sent "
                     f"({data['passes']:g} passes, wrapped around {data['wraps']} times)")
    srv, gen = summary["server"], summary["generator"]
    if srv["cpu_percent_mean"] is not None:
        lines.append(f"  server      cpu {srv['cpu_percent_mean']:.0f}% (mean, all processes)  "
                     f"rss {srv['rss_mb_max']:.0f} MB (peak)")
    if gen["cpu_percent_mean"] is not None:
        lines.append(f"  generator   cpu {gen['cpu_percent_mean']:.0f}% (mean)")
    if (knee := summary.get("knee")) is not None:
        lines.append(f"  knee        {knee['text']}; saturation {knee['saturation_rps']:g} req/s")
    if (soak := summary.get("soak")) is not None:
        lines.append(f"  soak        {soak['verdict'].upper()}: server RSS {soak['rss_mb_per_hour']:+.3g} MB/h "
                     f"(R² {soak['rss_r2']:.2f}), p50 {soak['p50_drift']:+.0%} and p99 {soak['p99_drift']:+.0%} "
                     "over the run")
    for t in summary["thresholds"]:
        observed = ("-" if t["observed"] is None else t["observed"] if isinstance(t["observed"], str)
                    else f"{t['observed']:g}")
        lines.append(f"  threshold   {t['expression']:<24} observed {observed:<10} "
                     f"{'PASS' if t['passed'] else 'FAIL'}")
    lines.append(f"  valid       {'yes' if summary['valid'] else 'NO'}")
    for reason in summary["invalid_reasons"]:
        lines.append(f"    - {reason}")
    for note in summary["notes"]:
        lines.append(f"    note: {note}")
    if summary["partial"]:
        lines.append("  PARTIAL run (stopped early): figures cover what ran")
    return "\n".join(lines)


def token_lines(summary: Summary, ms: Any) -> list[str]:
    """A generative run's token figures (analysis.tokens): TTFT, ITL, TPOT, tokens/s, goodput."""
    tokens = summary.get("tokens")
    if not tokens:
        return []
    lines = []
    for key, label in (("ttft_ms", "ttft ms    "), ("itl_ms", "itl ms     "), ("tpot_ms", "tpot ms    ")):
        fig = tokens[key]
        lines.append(f"  {label} p50 {ms(fig['p50'])}  p90 {ms(fig['p90'])}  p95 {ms(fig['p95'])}  "
                     f"p99 {ms(fig['p99'])}  max {ms(fig['max'])}  mean {ms(fig['mean'])}")
    rate = tokens["output_tokens_per_s"]
    counted = " (counted by chunks: the server sent no usage)" if tokens["counted_by"] in ("chunks", "mixed") else ""
    lines.append(f"  tokens      {tokens['output_tokens']} out ({0 if rate is None else rate:.1f}/s), "
                 f"{'-' if tokens['input_tokens'] is None else tokens['input_tokens']} in{counted}")
    good = summary.get("goodput")
    if good:
        slo = ", ".join(f"{k} <= {v:g}" for k, v in good["slo"].items())
        fraction = "-" if good["fraction"] is None else f"{good['fraction']:.1%}"
        lines.append(f"  goodput     {good['rps'] or 0:.1f} req/s ({fraction} of requests meet {slo})")
    return lines
