"""Local resolution of two half maps, and the map filtered at its local resolution.

As blocres and relion_postprocess --locres: around points of a grid --step-voxels apart (inside
--mask), both half maps are seen through the same soft spherical window of --window-A Å; the
FSC of the two windows crosses --threshold (0.143 by default, RELION's choice for half maps) at
that point's local resolution, interpolated between shells (--crossing last-above: RELION's
last-shell rule on the window's shells, coarser by half a window shell on average); the grid is
interpolated trilinearly to every voxel. With --randomize-at-A, each local FSC is corrected for
the window's own correlation as relion_postprocess --locres does: the phases of both half maps
are randomised beyond that resolution (seed 0, so the result is the same on every run) and the
same windows of the randomised maps give the FSC that Chen et al.'s formula removes. Off by
default: cryolab removes each window's mean and uses a soft window, so the correction changes
the local resolution little (benchmarks/local_resolution.py). The average of the half maps, sharpened by --bfactor (fitted on the
Guinier plot, as cryolab postprocess, by default), is then low-pass filtered at ten resolutions
spanning the local range, and each voxel blends the two that bracket its local resolution.

The window limits what can be measured: from 2 × the pixel size (Nyquist) to the window itself
(a point whose FSC is below the threshold already in the first shell). Larger windows give
smoother, less noisy maps that blur the boundaries between regions; a window several times the
expected resolution, about 20 voxels, is the usual choice.

Writes into the output folder:

  local_resolution.mrc     local resolution in Å per voxel, with the half maps' pixel size; outside
                           the mask (value < 0.5) the global resolution. In ChimeraX, open
                           local_filtered.mrc (#1) and this map (#2) and colour the surface by it:
                           color sample #1 map #2 palette rainbow
  local_filtered.mrc       the sharpened average filtered at the local resolution
  local_resolution.json    min / median / max local resolution inside the mask (Å), window,
                           grid step, threshold, crossing rule, phase randomisation (Å, seed;
                           null when off), the global FSC resolution and the B-factor
  local_resolution_histogram.png   histogram of local resolution inside the mask
  local_resolution_slices.png      central slices: map and local resolution side by side
  index.html               the figures with captions

Examples:
  cryolab local-res half1.mrc half2.mrc --mask mask.mrc -o locres
  cryolab local-res half1.mrc half2.mrc --mask mask.mrc --window-A 25 --bfactor 0 -o locres_plain
  cryolab local-res half1.mrc half2.mrc --mask mask.mrc --randomize-at-A 25 --crossing last-above -o locres_relionlike
"""

from __future__ import annotations

from cryolab.cli.fsc import add_half_map_args
from cryolab.cli.postprocess import parse_bfactor

RANDOMIZATION_SEED = 0
"""Seed of the random phases of --randomize-at-A: the same maps give the same local resolution."""


def add_args(parser) -> None:
    add_half_map_args(parser, unfiltered=True)
    parser.add_argument("--mask", metavar="MASK", help="soft mask (MRC, values in [0, 1], same box and pixel size): local "
                        "resolution where it is >= 0.5, global FSC corrected by phase randomisation")
    parser.add_argument("--window-A", type=float, metavar="Å",
                        help="edge of the window cube in Å (default: 20 voxels); at least 6 voxels, at most the box")
    parser.add_argument("--step-voxels", type=int, default=3, metavar="N",
                        help="spacing in voxels of the grid where the FSC is computed (default 3)")
    parser.add_argument("--threshold", type=float, default=0.143, metavar="FSC",
                        help="FSC threshold (dimensionless) of the local and global resolution (default 0.143)")
    parser.add_argument("--crossing", choices=("interpolated", "last-above"), default="interpolated",
                        help="local crossing: 'interpolated' (default) between the window's shells, or 'last-above', RELION's "
                             "last shell above the threshold (coarser by half a window shell on average)")
    parser.add_argument("--randomize-at-A", type=float, metavar="Å",
                        help="correct each local FSC by phase randomisation beyond this resolution in Å, as relion_postprocess "
                             "--locres_randomize_at (RELION's default 25 Å); default: no correction")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å; overrides the map headers")
    parser.add_argument("--bfactor", type=parse_bfactor, default="auto", metavar="auto|Å²",
                        help="'auto' (default): fit the B-factor on the Guinier plot as cryolab postprocess; or a B-factor "
                             "in Å² applied as exp(-B k²/4) before local filtering (negative sharpens, 0 for the plain average)")


def main(args, out) -> None:
    import json
    import math

    import numpy as np
    import torch

    from cryolab.cli.fsc import read_half_maps
    from cryolab.errors import InputError
    from cryolab.io import write_mrc
    from cryolab.postprocess import postprocess
    from cryolab.postprocess_local import local_lowpass
    from cryolab.validate import fsc_resolution, local_resolution

    if not 0 < args.threshold < 1:
        raise InputError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.step_voxels < 1:
        raise InputError(f"--step-voxels must be a positive number of voxels, got {args.step_voxels}")
    if args.bfactor != "auto" and not math.isfinite(args.bfactor):
        raise InputError(f"--bfactor must be 'auto' or a finite number of Å², got {args.bfactor}")
    map_a, map_b, mask, pixel_size_A = read_half_maps(args.half1, args.half2, args.mask, args.pixel_size)
    n = map_a.shape[0]
    window_A = args.window_A if args.window_A is not None else min(20, n) * pixel_size_A

    local = local_resolution(map_a, map_b, pixel_size_A, mask=mask, window_A=window_A, step_voxels=args.step_voxels,
                             threshold=args.threshold, crossing=args.crossing.replace("-", "_"),
                             randomize_at_A=args.randomize_at_A, seed=RANDOMIZATION_SEED, show_progress=True)
    # The global resolution and the sharpened average, as cryolab postprocess computes them (no FSC
    # weighting and no final low-pass: the local filter takes their place).
    post = postprocess(map_a, map_b, pixel_size_A, mask=mask, b_factor_A2=args.bfactor, fsc_weighting=False, lowpass_A=None)
    global_res = fsc_resolution(post.fsc_final, n, pixel_size_A, args.threshold)
    fill_A = global_res.interpolated_resolution_A if math.isfinite(global_res.interpolated_resolution_A) else local.window_A
    filled = torch.where(local.inside, local.resolution_A, torch.full_like(local.resolution_A, fill_A))
    filtered = local_lowpass(post.map, filled, pixel_size_A)

    write_mrc(out.path("local_resolution.mrc"), filled, pixel_size_A)
    write_mrc(out.path("local_filtered.mrc"), filtered, pixel_size_A)

    values = local.resolution_A[local.inside].numpy()

    def clean(x):
        return None if x is None or not math.isfinite(x) else round(float(x), 4)

    summary = {
        "box_size": n,
        "pixel_size_A": pixel_size_A,
        "window_A": clean(local.window_A),
        "window_voxels": local.window_voxels,
        "step_voxels": local.step_voxels,
        "threshold": local.threshold,
        "crossing": local.crossing,
        "randomize_at_A": local.randomize_at_A,
        "randomize_from_window_shell": local.randomize_from_window_shell,
        "randomization_seed": RANDOMIZATION_SEED if local.randomize_at_A is not None else None,
        "local_resolution_A": {"min": clean(values.min()), "median": clean(float(np.median(values))), "max": clean(values.max()),
                               "n_voxels": int(values.size), "region": "mask >= 0.5" if mask is not None else "whole box"},
        "global_resolution_A": clean(global_res.interpolated_resolution_A),
        "global_resolution_shell_rule_A": clean(global_res.resolution_A),
        "global_fsc_curve": ("corrected masked FSC" if post.masked is not None and post.fsc_final is post.masked.corrected
                             else "unmasked FSC"),
        "outside_mask_value_A": clean(fill_A) if mask is not None else None,
        "bfactor_A2": clean(post.b_factor_A2),
        "bfactor_mode": "auto" if post.bfactor_fit is not None else "given",
    }
    out.path("local_resolution.json").write_text(json.dumps(summary, indent=2) + "\n")
    _figures(out, 0.5 * (map_a + map_b), local, values, summary)


def _figures(out, average, local, values, summary) -> None:
    import numpy as np

    from cryolab.plot import centred_extent
    from cryolab.report import Figure, plt, save_figure, write_index

    global_A = summary["global_resolution_A"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.hist(values, bins=min(60, max(10, int(np.sqrt(values.size)))), color="C0")
    if global_A is not None:
        ax.axvline(global_A, color="k", ls="--", lw=1, label=f"global FSC resolution {global_A:.2f} Å")
        ax.legend(fontsize=8)
    ax.set_xlabel("local resolution (Å)")
    ax.set_ylabel("voxels")
    ax.set_title(f"{summary['local_resolution_A']['region']}, window {local.window_A:g} Å, FSC {local.threshold:g}", fontsize=10)
    save_figure(fig, out.path("local_resolution_histogram.png"))

    n = average.shape[0]
    c = n // 2
    resolution = local.resolution_A.numpy()
    average = average.numpy()
    planes = [("central z slice (x right, y up)", np.s_[c, :, :]), ("central y slice (x right, z up)", np.s_[:, c, :]),
              ("central x slice (y right, z up)", np.s_[:, :, c])]
    extent = centred_extent(n, local.pixel_size_A)
    low, high = float(values.min()), float(np.percentile(values, 99))  # a few outliers would take the whole scale
    fig, axes = plt.subplots(3, 2, figsize=(8.5, 11), squeeze=False)
    for row, (title, index) in enumerate(planes):
        axes[row, 0].imshow(average[index], cmap="gray", origin="lower", extent=extent)
        axes[row, 0].set_title(f"map, {title}", fontsize=9)
        shown = axes[row, 1].imshow(resolution[index], cmap="jet", origin="lower", extent=extent, vmin=low, vmax=high)
        axes[row, 1].set_title(f"local resolution, {title}", fontsize=9)
        fig.colorbar(shown, ax=axes[row, 1], label="local resolution (Å)", fraction=0.046, pad=0.04, extend="max")
        for ax in axes[row]:
            ax.set_xlabel("Å")
    fig.tight_layout()
    save_figure(fig, out.path("local_resolution_slices.png"))

    stats = summary["local_resolution_A"]
    write_index(
        out.path("index.html"), "cryolab local-res",
        [Figure("local_resolution_histogram.png", "Local resolution",
                f"Local resolution of {stats['n_voxels']} voxels ({stats['region']}): median {stats['median']} Å, "
                f"from {stats['min']} to {stats['max']} Å; the dashed line is the global FSC resolution."),
         Figure("local_resolution_slices.png", "Central slices",
                "Left: the average of the half maps; right: its local resolution (blank outside the mask), blue "
                "better resolved, red worse; the colour scale runs from the minimum to the 99th percentile.")],
        intro=(f"FSC of the half maps at {local.threshold:g} in a soft spherical window of {local.window_A:g} Å "
               f"({local.window_voxels} voxels) around points {local.step_voxels} voxels apart, interpolated to every voxel."),
        facts=[("median local resolution", f"{stats['median']} Å"), ("range", f"{stats['min']} – {stats['max']} Å"),
               ("global FSC resolution", f"{global_A} Å"), ("window", f"{local.window_A:g} Å"),
               ("crossing", local.crossing),
               ("phase-randomisation correction",
                f"beyond {local.randomize_at_A:g} Å" if local.randomize_at_A is not None else "none"),
               ("B-factor applied before filtering", f"{summary['bfactor_A2']} Å² ({summary['bfactor_mode']})")],
        files=[("local_resolution.mrc", "local resolution in Å per voxel (colour a surface by it in ChimeraX)"),
               ("local_filtered.mrc", "the sharpened average filtered at its local resolution"),
               ("local_resolution.json", "the numbers")],
    )
