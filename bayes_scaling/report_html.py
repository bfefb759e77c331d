"""The report's page: sections of text, tables and captioned figures in one self-contained
HTML file (figures embedded as base64 PNG, styles inline; no script, no external resource)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["Figure", "Section", "render", "table_html"]


@dataclass(frozen=True)
class Figure:
    """A PNG (base64) with the caption that says what it shows and how to read it."""

    name: str
    png_base64: str
    caption: str

    @classmethod
    def from_matplotlib(cls, figure: Any, name: str, caption: str) -> Figure:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        return cls(name, base64.b64encode(buffer.getvalue()).decode("ascii"), caption)


@dataclass
class Section:
    """One part of the page; ``left_out`` says why a section has no content for this table."""

    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    left_out: str | None = None


def table_html(table: pd.DataFrame) -> str:
    """A table with numbers to four significant figures (no ``4.1999999e22`` dumps)."""

    def number(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    return table.to_html(index=False, border=0, classes="numbers", formatters=None,
                         float_format=number, escape=True)  # fmt: skip


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
nav a { margin-right: 1em; }
table.numbers { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
table.numbers th, table.numbers td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4;
                                     text-align: right; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #444; max-width: 900px; }
.left-out { color: #8a5a00; background: #fff6e0; padding: .5em .8em; border-radius: 4px; }
#summary p { font-size: 1.08em; }
"""


def render(title: str, sections: list[Section]) -> str:
    """The whole page."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<nav>" + "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s in sections) + "</nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.key}"><h2>{escape(section.title)}</h2>')
        if section.left_out:
            parts.append(f'<p class="left-out">Left out: {escape(section.left_out)}</p>')
        parts += [f"<p>{escape(text)}</p>" for text in section.paragraphs]
        parts += section.tables
        for figure in section.figures:
            parts.append(
                f'<figure id="figure-{figure.name}"><img alt="{escape(figure.caption)}" '
                f'src="data:image/png;base64,{figure.png_base64}">'
                f"<figcaption>{escape(figure.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
