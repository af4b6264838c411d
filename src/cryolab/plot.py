"""Figures that several commands and notebooks share, with axes labelled in Å and 1/Å."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cryolab.report import plt


def add_resolution_axis(ax, *, resolutions_A: Sequence[float] = (50, 20, 10, 7, 5, 4, 3, 2.5, 2, 1.5)) -> None:
    """Give an axis whose x is spatial frequency (1/Å) a top axis labelled in resolution (Å).

    Call after plotting, so the x range is known; ticks are placed at ``resolutions_A`` within it.
    """

    low, high = ax.get_xlim()
    shown = [r for r in resolutions_A if low < 1.0 / r <= high]
    top = ax.twiny()  # same x range; ticks placed at exact frequencies 1/r
    top.set_xlim(low, high)
    top.set_xticks([1.0 / r for r in shown])
    top.set_xticklabels([f"{r:g}" for r in shown])
    top.set_xlabel("resolution (Å)")


def image_grid(images: Sequence, titles: Sequence[str] = (), *, ncols: int = 4, cmap: str = "gray", extent=None, suptitle: str = "", panel_size: float = 2.6):
    """A grid of 2D images (numpy or torch) with titles; returns the matplotlib figure."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = np.asarray(images[i].detach().cpu() if hasattr(images[i], "detach") else images[i])
        ax.imshow(img, cmap=cmap, origin="lower", extent=extent)
        if i < len(titles):
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def centred_extent(n: int, step: float) -> list[float]:
    """``imshow`` extent of an ``n``-sample axis (both axes) centred at ``n // 2``, spacing ``step`` (Å or 1/Å).

    Sample ``i`` sits at ``(i - n // 2) · step`` (docs/conventions.md), and imshow's extent names
    the outer pixel edges, half a sample beyond the first and last centres.
    """
    lo, hi = (-(n // 2) - 0.5) * step, (n - n // 2 - 0.5) * step
    return [lo, hi, lo, hi]
