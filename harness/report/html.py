"""Self-contained HTML pages (inline CSS and images, nothing fetched) shared by report and compare."""
from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 24px; margin: 8px 0 2px; }
h2 { font-size: 18px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: #59636e; margin: 0 0 14px; }
.box { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 18px; margin: 12px 0; }
.badges { margin: 6px 0 10px; }
.badge { display: inline-block; padding: 3px 10px; border-radius: 12px; font-weight: 600; font-size: 13px;
         margin-right: 6px; color: #fff; }
.pass { background: #1a7f37; } .fail { background: #cf222e; } .warn { background: #9a6700; }
.neutral { background: #59636e; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 10px 0; }
.tile { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 8px 10px; }
.tile .v { font-size: 20px; font-weight: 600; }
.tile .k { color: #59636e; font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; background: #fff; font-size: 13px; }
th, td { border: 1px solid #d8dee4; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #cf222e; font-weight: 600; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
img.chart { width: 100%; height: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
            margin: 6px 0; }
.note { color: #59636e; font-size: 13px; }
ul.tight { margin: 4px 0; padding-left: 20px; }
nav a { margin-right: 12px; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{esc(text)}</span>'


def tiles(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items) + "</div>"


def table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    """A table (no header row when `header` is None); cells from column `numeric_from` on are
    right-aligned. Cells given as ("<raw html>",) tuples are inserted unescaped."""
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            content = cell[0] if isinstance(cell, tuple) else esc(cell)
            cells.append(f'<td class="n">{content}</td>' if i >= numeric_from else f"<td>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def image(png_b64: str | None, alt: str) -> str:
    if png_b64 is None:
        return f'<p class="note">({esc(alt)}: no data)</p>'
    return f'<img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{png_b64}">'


def fmt(value: Any, digits: int = 3, unit: str = "") -> str:
    """Numbers for people: 3 significant digits, thousands separators, '-' for missing."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        text = f"{int(value):,}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}g}"
    return f"{text} {unit}".rstrip()
