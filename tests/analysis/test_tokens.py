"""Token figures from hand-made rows: vLLM's definitions of TTFT, TPOT and ITL, goodput, counting;
and the token side file written by the sample writer, read back joined to its rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.tokens import meets, token_figures, token_windows
from harness.engines.sse import OpenAIStream
from harness.report.compare_charts import pareto_front
from harness.results.samples import NOT_SENT, Sample, SampleWriter
from harness.results.tokens import read_streams


def streams(rows: list[dict]) -> pd.DataFrame:
    base = {"error": "", "first_content": np.nan, "input_tokens": pd.NA, "counted_by": "usage"}
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["first_content"] = df["first_content"].fillna(df["first_token"])
    df["output_tokens"] = df["output_tokens"].astype("Int64")
    df["input_tokens"] = df["input_tokens"].astype("Int64")
    return df


def test_ttft_tpot_and_itl_follow_vllms_definitions() -> None:
    """Request A: sent at 0, first token at 0.1, 5 tokens, ends at 0.5 -> TPOT 100 ms; request B:
    one long gap among short ones. ITL percentiles are over all 6 gaps, not per-request means."""
    df = streams([
        {"intended": 0.0, "end": 0.5, "first_token": 0.1, "output_tokens": 5, "gaps": np.array([100.0] * 4)},
        {"intended": 1.0, "end": 1.6, "first_token": 1.3, "output_tokens": 3, "gaps": np.array([10.0, 290.0])},
    ])
    figs = token_figures(df, df, 2.0, None)["tokens"]
    assert figs["ttft_ms"]["p50"] == pytest.approx(200.0) and figs["ttft_ms"]["max"] == pytest.approx(300.0)
    assert sorted([figs["tpot_ms"]["max"], figs["tpot_ms"]["p50"]]) == pytest.approx([125.0, 150.0])
    assert figs["itl_ms"]["p50"] == pytest.approx(100.0)  # median of all six gaps
    assert figs["itl_ms"]["max"] == pytest.approx(290.0)
    assert figs["output_tokens"] == 8 and figs["output_tokens_per_s"] == pytest.approx(4.0)
    assert figs["input_tokens"] is None and figs["counted_by"] == "usage"


def test_failed_requests_count_in_no_token_figure() -> None:
    df = streams([
        {"intended": 0.0, "end": 0.5, "first_token": 0.1, "output_tokens": 5, "gaps": np.array([100.0] * 4)},
        {"intended": 0.0, "end": 9.0, "first_token": 5.0, "output_tokens": 2, "gaps": np.array([4000.0]),
         "error": "closed"},
    ])
    figs = token_figures(df, df, 1.0, None)["tokens"]
    assert figs["ttft_ms"]["max"] == pytest.approx(100.0) and figs["itl_ms"]["max"] == pytest.approx(100.0)
    assert figs["output_tokens"] == 5


def test_goodput_counts_requests_meeting_every_objective_over_all_sent() -> None:
    df = streams([
        {"intended": 0.0, "end": 0.5, "first_token": 0.1, "output_tokens": 5, "gaps": np.zeros(4)},  # meets both
        {"intended": 0.0, "end": 0.5, "first_token": 0.3, "output_tokens": 5, "gaps": np.zeros(4)},  # TTFT 300
        {"intended": 0.0, "end": 0.9, "first_token": 0.1, "output_tokens": 5, "gaps": np.zeros(4)},  # TPOT 200
        {"intended": 0.0, "end": 0.1, "first_token": 0.1, "output_tokens": 1, "gaps": np.zeros(0)},  # no TPOT: meets
    ])
    samples = pd.concat([df[["intended", "error"]], pd.DataFrame({"intended": [0.0, 0.0], "error": ["timeout", NOT_SENT]})])
    slo = {"ttft_ms": 200.0, "tpot_ms": 150.0, "e2e_ms": None}
    good = token_figures(df, samples, 2.0, slo)["goodput"]
    assert good == {"slo": {"ttft_ms": 200.0, "tpot_ms": 150.0}, "requests": 2, "rps": 1.0, "fraction": 0.4}
    assert list(meets(pd.DataFrame({"ttft_ms": [1.0, 3.0], "tpot_ms": [np.nan, 1.0], "e2e_ms": [1.0, 1.0]}),
                      {"ttft_ms": 2.0, "tpot_ms": 0.5})) == [True, False]


def test_chunk_counted_runs_say_so() -> None:
    df = streams([{"intended": 0.0, "end": 0.5, "first_token": 0.1, "output_tokens": 3, "gaps": np.zeros(2),
                   "counted_by": "chunks"},
                  {"intended": 0.0, "end": 0.5, "first_token": 0.1, "output_tokens": 3, "gaps": np.zeros(2)}])
    assert token_figures(df, df, 1.0, None)["tokens"]["counted_by"] == "mixed"


def test_the_writer_puts_each_streams_tokens_beside_its_row(tmp_path: Path) -> None:
    """Rows with and without streams (a refused request has none); the side file's row numbers join
    each stream to its own row, times on the run's clock (t0 subtracted), gaps in ms."""
    writer = SampleWriter(tmp_path / "samples-0.csv")
    t0 = 1000.0
    for k in range(5):
        row = Sample(float(k), float(k), k + 0.5, 200 if k != 2 else 0, "" if k != 2 else "connect", 10, 0, 0)
        if k != 2:
            stream = OpenAIStream()
            stream.first_byte, stream.first_token, stream.last_token = t0 + k + 0.1, t0 + k + 0.2, t0 + k + 0.4
            stream.first_content, stream.chunks, stream.gaps = t0 + k + 0.2, 3, [0.1, 0.1]
            stream.output_tokens, stream.input_tokens, stream.finish_reason = 10 + k, 4, "length"
            writer.tokens[id(row)] = (stream, t0)
        writer.append(row)
    writer.close()
    df = read_streams(tmp_path)
    assert list(df["intended"]) == [0.0, 1.0, 3.0, 4.0]
    assert list(df["output_tokens"]) == [10, 11, 13, 14]
    np.testing.assert_allclose(df["first_token"] - df["intended"], 0.2, atol=1e-6)
    assert all(list(g) == [100.0, 100.0] for g in df["gaps"])
    assert set(df["finish_reason"]) == {"length"} and set(df["counted_by"]) == {"usage"}


def test_windows_put_each_token_chunk_at_its_arrival() -> None:
    """One request sent at 0.5 s, first token at 0.9 s, then chunks 200 ms apart: 6 tokens in 3
    chunks (usage says 6), arriving at 0.9, 1.1 and 1.3 s; its TTFT and goodput count in second 0."""
    df = streams([{"intended": 0.5, "end": 1.4, "first_token": 0.9, "output_tokens": 6,
                   "gaps": np.array([200.0, 200.0])}])
    win = token_windows(df, 3.0, slo={"ttft_ms": 500.0})
    assert list(win["output_tokens_per_s"]) == [2.0, 4.0, 0.0]
    assert win["ttft_p50_ms"].iloc[0] == pytest.approx(400.0) and np.isnan(win["ttft_p50_ms"].iloc[1])
    assert list(win["itl_p50_ms"].fillna(-1)) == [200.0, -1, -1]
    assert list(win["goodput_rps"]) == [1.0, 0.0, 0.0]


def test_the_pareto_front_keeps_runs_no_other_beats_on_both_axes() -> None:
    """(tokens/s, latency): the second is beaten by the third on both; the rest trade off."""
    points = [(100.0, 10.0), (150.0, 30.0), (200.0, 20.0), (300.0, 50.0), (300.0, 60.0)]
    assert pareto_front(points) == [0, 2, 3]
