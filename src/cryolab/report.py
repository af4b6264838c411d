"""A report folder: PNG figures and an ``index.html`` that shows them with captions.

Commands write figures with :func:`save_figure` and finish with :func:`write_index`, so a person
can open one file in a browser instead of a viewer for every format.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written, never shown
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """One entry of a report: the PNG's file name (relative to the report), a title and a caption."""

    filename: str
    title: str
    caption: str = ""


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def write_index(path: str | Path, title: str, figures: list[Figure], *, intro: str = "") -> Path:
    """Write an HTML page that shows ``figures`` in order with their captions."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}"
        "figcaption{color:#333;margin-top:.5em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    parts.append("<ul>" + "".join(f"<li><a href='#{html.escape(f.filename)}'>{html.escape(f.title)}</a></li>" for f in figures) + "</ul>")
    for f in figures:
        parts.append(
            f"<figure id='{html.escape(f.filename)}'><h2>{html.escape(f.title)}</h2>"
            f"<a href='{html.escape(f.filename)}'><img src='{html.escape(f.filename)}' alt='{html.escape(f.title)}'></a>"
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
        )
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path
