"""metrics.csv: the target's Prometheus /metrics samples over a run, one row per sample and scrape."""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results import layout

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["t", "name", "labels", "value"]
HEADER = ",".join(COLUMNS) + "\n"


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv as a frame (t, name, labels, value); empty when the run scraped nothing."""
    import pandas as pd

    data = layout.complete_lines(Path(run_dir) / layout.METRICS)
    if data.count(b"\n") <= 1:
        return pd.DataFrame({"t": pd.Series(dtype="float64"), "name": pd.Series(dtype="object"),
                             "labels": pd.Series(dtype="object"), "value": pd.Series(dtype="float64")})
    return pd.read_csv(io.BytesIO(data), dtype={"t": "float64", "name": "object", "labels": "object",
                                                "value": "float64"}, keep_default_na=False)
