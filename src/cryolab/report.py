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
    """One entry of a report: the PNG's file name (relative to the report), a title and a caption.

    ``section``, when given, starts a new section of the report with that heading just before
    this figure (a story in chapters); ``text`` is a paragraph shown under the heading.
    """

    filename: str
    title: str
    caption: str = ""
    section: str = ""
    text: str = ""


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def write_index(path: str | Path, title: str, figures: list[Figure], *, intro: str = "",
                facts: list[tuple[str, str]] | None = None, files: list[tuple[str, str]] | None = None) -> Path:
    """Write an HTML page that shows ``figures`` in order with their captions.

    ``facts`` (label, value) pairs become a small table after the introduction (the numbers a
    reader came for); ``files`` (file name relative to the report, description) a list of links
    at the end (the data behind the figures). Figures with a ``section`` start a new section.
    """
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}"
        "figcaption{color:#333;margin-top:.5em}"
        "table.facts{border-collapse:collapse}table.facts td{padding:.15em .8em;border-bottom:1px solid #eee}"
        "</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{e(intro)}</p>")
    if facts:
        parts.append("<table class='facts'>" + "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in facts) + "</table>")
    parts.append("<ul>" + "".join(f"<li><a href='#{e(f.filename)}'>{e(f.title)}</a></li>" for f in figures) + "</ul>")
    for f in figures:
        if f.section:
            parts.append(f"<h2>{e(f.section)}</h2>")
        if f.text:
            parts.append(f"<p>{e(f.text)}</p>")
        heading = "h3" if any(g.section for g in figures) else "h2"
        parts.append(
            f"<figure id='{e(f.filename)}'><{heading}>{e(f.title)}</{heading}>"
            f"<a href='{e(f.filename)}'><img src='{e(f.filename)}' alt='{e(f.title)}'></a>"
            f"<figcaption>{e(f.caption)}</figcaption></figure>"
        )
    if files:
        parts.append("<h2>Files</h2><ul>" + "".join(f"<li><a href='{e(name)}'>{e(name)}</a>: {e(text)}</li>" for name, text in files) + "</ul>")
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path
