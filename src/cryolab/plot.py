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


def fsc_curves_figure(frequencies, curves: dict, resolution, *, title: str = ""):
    """FSC curves against spatial frequency with the 0.143 and 0.5 lines and the reported resolution.

    Parameters
    ----------
    frequencies
        ``(S,)`` shell frequencies in 1/Å (:func:`cryolab.validate.fsc_shell_frequencies`).
    curves
        ``{label: (curve (S,), matplotlib style)}``, drawn in order; a label starting with
        "corrected" (or a single curve) is drawn thicker.
    resolution
        :class:`cryolab.validate.FSCResolution` to mark (nothing is marked at shell 0).
    title
        Legend title.

    Returns the matplotlib figure (resolution in Å on the top axis).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, (curve, style) in curves.items():
        ax.plot(frequencies, curve, style, lw=1.5 if label.startswith("corrected") or len(curves) == 1 else 1.0, label=label)
    ax.axhline(0.143, color="0.4", lw=0.8, ls="--")
    ax.axhline(0.5, color="0.4", lw=0.8, ls=":")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.text(float(frequencies[-1]), 0.143, " 0.143", va="bottom", ha="right", fontsize=8, color="0.3")
    ax.text(float(frequencies[-1]), 0.5, " 0.5", va="bottom", ha="right", fontsize=8, color="0.3")
    if resolution.shell > 0:
        ax.axvline(resolution.frequency_per_A, color="C3", lw=0.8)
        ax.annotate(f"{resolution.resolution_A:.2f} Å (FSC {resolution.threshold:g}; interpolated {resolution.interpolated_resolution_A:.2f} Å)",
                    xy=(resolution.frequency_per_A, resolution.threshold), xytext=(-10, 45), textcoords="offset points",
                    ha="right", fontsize=9, color="C3", arrowprops=dict(arrowstyle="->", color="C3"),
                    bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.8))
    ax.set_xlim(0, float(frequencies[-1]))
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("Fourier shell correlation")
    ax.legend(loc="lower left", fontsize=8, title=title or None, title_fontsize=8)
    add_resolution_axis(ax)
    return fig


def guinier_figure(result):
    """Guinier plot of a :class:`cryolab.postprocess.PostprocessResult`: ln mean amplitude against 1/d².

    Draws the average of the half maps, the FSC-weighted and the sharpened map, and the B-factor
    fit with its range shaded (when the B-factor was fitted). Returns the matplotlib figure
    (resolution in Å on the top axis).
    """
    x = result.frequency_squared.numpy()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for curve, label, style in ((result.guinier_input, "average of half maps", "k-"),
                                (result.guinier_weighted, "FSC-weighted", "C0-"),
                                (result.guinier_sharpened, f"sharpened (B = {result.b_factor_A2:.0f} Å²)", "C3-")):
        y = curve.numpy()
        shown = np.isfinite(y)
        ax.plot(x[shown][1:], y[shown][1:], style, lw=1, label=label)
    fit = result.bfactor_fit
    if fit is not None:
        xs = np.array([1 / fit.lowres_A**2, 1 / fit.highres_A**2])
        ax.plot(xs, fit.intercept + fit.slope * xs, "C1--", lw=2, label=f"fit {fit.lowres_A:g}–{fit.highres_A:.2f} Å, slope {fit.slope:.1f} Å²")
        ax.axvspan(xs[0], xs[1], color="C1", alpha=0.08)
    ax.set_xlabel("1/d² (1/Å²)")
    ax.set_ylabel("ln(mean amplitude)")
    ax.set_xlim(0, x[-1])
    ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top", functions=(lambda s: np.sqrt(np.clip(s, 1e-12, None)), lambda f: f**2))
    ticks = [d for d in (20, 10, 7, 5, 4, 3, 2.5, 2, 1.5) if 1 / d**2 <= x[-1]]
    top.set_ticks([1 / d for d in ticks], labels=[f"{d:g}" for d in ticks])
    top.set_xlabel("resolution (Å)")
    return fig


def class_gallery_figure(references, counts, class_resolution_A=None, *, ncols: int = 8, panel_size: float = 2.2):
    """2D class averages, most populated first, titled with count, share and resolution.

    Parameters
    ----------
    references
        ``(K, N, N)`` class averages (numpy or torch).
    counts
        ``(K,)`` particles assigned to each class; ties keep class order.
    class_resolution_A
        Optional ``(K,)`` resolution of each class in Å (inf: shown as "—").
    ncols, panel_size
        Grid columns (at most K) and panel size in inches.

    Returns the matplotlib figure; classes are numbered from 1 as in ``rlnClassNumber``.
    """
    counts = np.asarray(counts.detach().cpu() if hasattr(counts, "detach") else counts).astype(np.int64)
    order = np.argsort(-counts, kind="stable")
    total = max(int(counts.sum()), 1)
    titles = []
    for c in order.tolist():
        text = f"class {c + 1}: {int(counts[c])} ({100 * int(counts[c]) / total:.1f}%)"
        if class_resolution_A is not None:
            res = float(class_resolution_A[c])
            text += f", {res:.1f} Å" if np.isfinite(res) else ", —"
        titles.append(text)
    return image_grid([references[c] for c in order.tolist()], titles, ncols=min(ncols, len(titles)), panel_size=panel_size)
