"""A small report document model rendered twice: to markdown (with PNGs) and to one self-contained HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .tables import format_value, to_markdown


@dataclass
class Heading:
    """A section heading (level 1-4)."""

    level: int
    text: str


@dataclass
class Text:
    """A plain paragraph (no markup; escaped in HTML)."""

    text: str


@dataclass
class Bullets:
    """A bulleted list of plain strings."""

    items: list[str]


@dataclass
class Table:
    """A table with a caption; floats rounded to `digits` (one number, or per column)."""

    df: pd.DataFrame
    caption: str = ""
    digits: int | dict[str, int] = 2


@dataclass
class Figure:
    """A figure: the PNG file name (markdown) and the plotly figure (HTML; None: the PNG there too), with a caption."""

    png: str
    plotly: Any
    caption: str = ""


@dataclass
class Document:
    """An ordered list of blocks."""

    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        """Append blocks in order."""
        self.blocks.extend(blocks)


def render_markdown(doc: Document) -> str:
    """The document as markdown, with figures as relative PNG links."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * (b.level + 1) + " " + b.text, ""]
        elif isinstance(b, Text):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [*(f"- {item}" for item in b.items), ""]
        elif isinstance(b, Table):
            out += ([f"_{b.caption}_", ""] if b.caption else []) + [to_markdown(b.df, b.digits), ""]
        elif isinstance(b, Figure):
            out += [f"![{b.png}]({b.png})", ""] + ([f"_{b.caption}_", ""] if b.caption else [])
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.caption{color:#555;font-style:italic;margin:.2em 0}
.figure{margin:1em 0 2em;overflow-x:auto}
"""


def _html_table(t: Table) -> str:
    cols = list(t.df.columns)
    nd = (lambda c: t.digits.get(c, 2)) if isinstance(t.digits, dict) else (lambda c: t.digits)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(v, nd(c)))}</td>" for c, v in zip(cols, row)) + "</tr>"
        for row in t.df.itertuples(index=False)
    )
    caption = f'<p class="caption">{html.escape(t.caption)}</p>' if t.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_block(b: Any, index: int) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level + 1}>{html.escape(b.text)}</h{b.level + 1}>"
    if isinstance(b, Text):
        return f"<p>{html.escape(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _html_table(b) if not b.df.empty else "<p><em>(no rows)</em></p>"
    if isinstance(b, Figure):
        if b.plotly is None:  # a PNG-only figure (the PNG sits beside report.html)
            div = f'<img src="{html.escape(b.png)}" alt="{html.escape(b.png)}" style="max-width:100%">'
        else:
            div = b.plotly.to_html(
                full_html=False, include_plotlyjs=False, div_id=f"plot-{index}", config={"displaylogo": False}
            )
        caption = f'<p class="caption">{html.escape(b.caption)}</p>' if b.caption else ""
        return f'<div class="figure">{div}{caption}</div>'
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(doc: Document) -> str:
    """One HTML page with plotly.js inlined once (no CDN, no network) and every figure interactive."""
    from plotly.offline import get_plotlyjs

    body = "\n".join(_html_block(b, i) for i, b in enumerate(doc.blocks))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>"
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>"
    )
