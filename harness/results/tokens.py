"""The token side file, `tokens-<gen>.csv`: when each streamed answer's tokens arrived.

One line per request of a generative run (target.api) that got an answer:
`row,first_byte,first_token,first_content,last_token,output_tokens,input_tokens,finish_reason,
counted_by,message,gaps_ms`. row is the 1-based data row of the generator's `samples-<gen>.csv` (as in
results.checks); times are seconds since the run's start, on the samples' clock; output_tokens
is the server's `usage.completion_tokens`, or the token chunks when it sent no usage
(counted_by: usage | chunks); message is the error the server or the stream gave, if any; gaps_ms holds every gap between consecutive token chunks in ms,
space-separated, so inter-token latency percentiles are exact over all gaps of a run.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.results import layout

if TYPE_CHECKING:
    import pandas as pd

HEADER = ("row,first_byte,first_token,first_content,last_token,output_tokens,input_tokens,finish_reason,counted_by,"
          "message,gaps_ms\n")
COLUMNS = HEADER.strip().split(",")
DTYPES = {"row": "int64", "first_byte": "float64", "first_token": "float64", "first_content": "float64",
          "last_token": "float64", "output_tokens": "Int64", "input_tokens": "Int64",
          "finish_reason": "string", "counted_by": "string", "message": "string", "gaps_ms": "string"}
_TEXT = ("finish_reason", "message", "gaps_ms")  # an empty cell is an empty text, not a missing number


class TokenRecord(Protocol):
    """What a request's stream reader knows (harness.engines.sse.OpenAIStream), on time.monotonic()."""

    first_byte: float | None
    first_token: float | None
    first_content: float | None
    last_token: float | None
    gaps: list[float]
    input_tokens: int | None
    finish_reason: str | None
    message: str | None

    @property
    def tokens(self) -> int: ...

    @property
    def counted_by(self) -> str: ...


def _t(value: float | None, t0: float) -> str:
    return "" if value is None else f"{value - t0:.6f}"


def format_entry(row: int, record: TokenRecord, t0: float) -> str:
    return f"{row},{format_fields(record, t0)}"


def format_fields(record: TokenRecord, t0: float) -> str:
    """An entry's line without its row number (a Locust worker's, numbered by the master)."""
    gaps = " ".join(f"{g * 1000.0:.3f}" for g in record.gaps)
    return (f"{_t(record.first_byte, t0)},{_t(record.first_token, t0)},{_t(record.first_content, t0)},"
            f"{_t(record.last_token, t0)},{record.tokens},"
            f"{'' if record.input_tokens is None else record.input_tokens},{_cell(record.finish_reason)},"
            f"{record.counted_by},{_cell(record.message)},{gaps}\n")


def _cell(text: str | None) -> str:
    """A text as one CSV cell on one line (quoted when it must be)."""
    if not text:
        return ""
    text = " ".join(text.split())
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


class TokenLog(layout.SideFile):
    """Appends entries to one tokens file (made on the first write)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, HEADER)

    def write(self, entries: list[tuple[int, TokenRecord, float]]) -> None:
        self.write_lines([(row, format_fields(record, t0)) for row, record, t0 in entries])

    def write_lines(self, entries: list[tuple[int, str]]) -> None:
        """Entries already formatted (format_fields), each with its row number."""
        self.write_text("".join(f"{row},{fields}" for row, fields in entries))


def read_tokens_file(path: Path) -> pd.DataFrame:
    import pandas as pd

    data = layout.complete_lines(path)
    if data.count(b"\n") <= 1:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})
    return pd.read_csv(io.BytesIO(data), dtype=DTYPES, keep_default_na=False,
                       na_values={c: [""] for c in COLUMNS if c not in _TEXT})


def read_streams(run_dir: Path | str) -> pd.DataFrame:
    """Every streamed request of a run folder: its sample row's columns joined with its token
    columns, plus `gaps` (an array of ms per request); empty when the run streamed nothing."""
    import numpy as np
    import pandas as pd

    from harness.results.samples import read_sample_file

    frames = []
    for path in layout.tokens_files(run_dir):
        samples_path = layout.samples_of(path)
        if samples_path is None:
            continue
        tokens = read_tokens_file(path)
        if tokens.empty:
            continue
        samples = read_sample_file(samples_path)
        samples.insert(0, "row", np.arange(1, len(samples) + 1))
        frames.append(samples.merge(tokens, on="row", how="inner"))
    if not frames:
        from harness.results.samples import DTYPES as SAMPLE_DTYPES

        return pd.DataFrame({**{c: pd.Series(dtype=t) for c, t in SAMPLE_DTYPES.items()},
                             **{c: pd.Series(dtype=t) for c, t in DTYPES.items()}, "gaps": pd.Series(dtype=object)})
    df = pd.concat(frames, ignore_index=True)
    df["gaps"] = [_gaps(text) for text in df["gaps_ms"].fillna("")]
    return df.sort_values("intended", kind="stable", ignore_index=True)


def _gaps(text: Any) -> Any:
    import numpy as np

    return np.array(text.split(), dtype=np.float64) if text else np.zeros(0)
