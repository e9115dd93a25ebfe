"""Self-contained HTML pages: figures embedded as base64 PNG, tables, one inline stylesheet.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot, no global state) and rendered
with the Agg canvas, so reports build headless and never touch the user's backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrkit.outputs import make_out_dir, write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d2733;padding:0 1rem}h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}table{border-collapse:collapse;font-size:.85rem;
margin:.6rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f3f5f7}
img.fig{max-width:100%;height:auto;display:block;margin:.6rem 0}.note{color:#57606a;font-size:.9rem}
.kpi{display:inline-block;margin:.3rem 1.4rem .3rem 0}.kpi b{font-size:1.35rem;display:block}
"""


def figure(width: float = 7.0, height: float = 4.0, layout: str | None = "constrained"):
    """A new matplotlib Figure with an Agg canvas (no pyplot); ``layout=None`` for hand-set margins."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a Figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI."""
    data = base64.b64encode(png).decode()
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def fig_tag(fig, alt: str) -> str:
    """Embed a Figure as an <img>."""
    return img_tag(figure_png(fig), alt)


def table_html(df: pd.DataFrame, float_format: str = "{:.3f}", index: bool = True) -> str:
    """A DataFrame as an HTML table; floats formatted, NaN shown as an en dash."""

    def fmt(v):
        if isinstance(v, float):
            return "–" if v != v else float_format.format(v)
        return v

    return df.map(fmt).to_html(index=index, escape=True, border=0, na_rep="–")


@dataclass(frozen=True)
class Section:
    """A titled part of a page; ``body`` is trusted HTML built by this package."""

    title: str
    body: str


def value_ci(value: float | None, low: float | None, high: float | None, missing: str = "–") -> str:
    """ "0.871 [0.842, 0.900]", the value alone without a finite interval, ``missing`` without a value
    (None stands for a NaN read back from JSON)."""
    if value is None or not math.isfinite(value):
        return missing
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def kpis(items: Iterable[tuple[str, str]]) -> str:
    """A row of headline numbers."""
    return "".join(f'<span class="kpi"><b>{html.escape(v)}</b>{html.escape(k)}</span>' for k, v in items)


def render_page(title: str, sections: Iterable[Section], subtitle: str = "") -> str:
    """A complete standalone HTML document."""
    body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
    sub = f'<p class="note">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>"
    )


def write_page(path: str | Path, page: str) -> Path:
    """Write a page atomically (temp file then rename), so a failed build never leaves half a report."""
    path = Path(path)
    make_out_dir(path.parent)
    return write_text(path, page)
