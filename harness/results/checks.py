"""The failed-checks side file, `checks-<gen>.csv`: why each row of kind `check` failed.

One line per failed response check, `row,reason`: row is the 1-based data row of the generator's
`samples-<gen>.csv` (the header not counted), reason a short text (harness.scenario.expect). The
file is made at the first failure, so a run whose checks all passed has none.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results import layout

if TYPE_CHECKING:
    import pandas as pd

HEADER = "row,reason\n"


def format_entry(row: int, reason: str) -> str:
    text = " ".join(reason.split()).replace('"', '""')  # one line, quoted as CSV
    return f'{row},"{text}"\n'


class CheckLog(layout.SideFile):
    """Appends entries to one checks file (made on the first write)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, HEADER)

    def write(self, entries: list[tuple[int, str]]) -> None:
        self.write_text("".join(format_entry(row, reason) for row, reason in entries))


def read_checks(run_dir: Path | str) -> pd.DataFrame:
    """Every failed check of a run folder: columns gen, row, reason (empty when none failed)."""
    import pandas as pd

    frames = []
    for path in layout.checks_files(run_dir):
        data = layout.complete_lines(path)
        if data.count(b"\n") <= 1:
            continue
        frame = pd.read_csv(io.BytesIO(data), dtype={"row": "int64", "reason": "string"}, keep_default_na=False)
        frames.append(frame.assign(gen=int(path.name.split(".")[0].split("-")[1]))[["gen", "row", "reason"]])
    if not frames:
        return pd.DataFrame({"gen": pd.Series(dtype="int64"), "row": pd.Series(dtype="int64"),
                             "reason": pd.Series(dtype="string")})
    return pd.concat(frames, ignore_index=True)


def summary_notes(run_dir: Path | str, top: int = 3) -> list[str]:
    """A note for the summary when responses failed their checks: how many, and the commonest reasons."""
    found = read_checks(run_dir)
    if found.empty:
        return []
    common = found["reason"].value_counts().head(top)
    reasons = "; ".join(f"{reason} ({count})" for reason, count in common.items())
    return [f"{len(found)} response(s) failed their checks (target.expect), errors of kind check: {reasons} "
            f"(every one in checks-<gen>.csv)"]
