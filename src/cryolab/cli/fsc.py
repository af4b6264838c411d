"""Fourier shell correlation of two half maps: curve, resolution, optional mask correction and cones.

The FSC is summed over the rfft half grid on integer shells round(|k|·N), as RELION's getFSC,
so the curve equals RELION's (docs/conventions.md). The resolution is reported by RELION's rule
(the last shell of the run from the origin with FSC >= threshold) and by linear interpolation of
the crossing. With --mask the masked FSC is corrected for the mask's own correlation by
randomising phases beyond the shell where the unmasked FSC first drops below 0.8
(Chen et al. 2013, Ultramicroscopy 135:24), as relion_postprocess does; the reported resolution
then comes from the corrected curve.

Writes into the output folder:

  fsc.csv        shell, frequency_per_A (1/Å), resolution_A (Å), fsc (unmasked) and, with --mask,
                 fsc_masked, fsc_phase_randomized_masked, fsc_corrected
  fsc.json       resolutions at 0.143 and 0.5 (both rules), box, pixel size, mask settings
  fsc.png        the curves against spatial frequency (resolution in Å on the top axis), the
                 0.143 and 0.5 lines and the reported resolution
  directional_fsc.csv, directional_fsc.png   with --cones N: resolution along N directions
                 (conical FSC) and its sphericity, to expose preferred orientation

Examples:
  cryolab fsc run_half1_class001_unfil.mrc run_half2_class001_unfil.mrc -o fsc
  cryolab fsc half1.mrc half2.mrc --mask mask.mrc --cones 200 -o fsc_masked
"""

from __future__ import annotations


def add_args(parser) -> None:
    add_half_map_args(parser)
    parser.add_argument("--mask", metavar="MASK", help="soft mask (MRC, values in [0, 1], same box and pixel size): "
                        "masked FSC, corrected by phase randomisation")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å; overrides the map headers")
    parser.add_argument("--threshold", type=float, default=0.143, metavar="FSC",
                        help="FSC threshold of the reported resolution (default 0.143, for half maps)")
    parser.add_argument("--randomize-at-fsc", type=float, default=0.8, metavar="FSC",
                        help="with --mask: randomise phases from the shell where the unmasked FSC drops below this (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random phases (with --mask; default 0)")
    parser.add_argument("--cones", type=int, default=0, metavar="N",
                        help="also compute the FSC in cones around N directions spread over the sphere (default 0: off)")
    parser.add_argument("--cone-angle-deg", type=float, default=20.0, metavar="°",
                        help="half-angle of each cone in degrees (default 20)")


def add_half_map_args(parser, *, unfiltered: bool = False) -> None:
    """The two positional half-map arguments, as every command on half maps names them."""
    kind = "unfiltered half map" if unfiltered else "half map"
    parser.add_argument("half1", metavar="HALF1", help=f"first {kind} (MRC, cubic)")
    parser.add_argument("half2", metavar="HALF2", help=f"second {kind} (MRC, same box and pixel size)")


def read_half_maps(half1, half2, mask_path, pixel_size):
    """Read two half maps and an optional mask; check boxes and pixel sizes (shared with `postprocess`).

    Returns (map_a, map_b, mask or None, pixel_size_A) with torch tensors.
    """
    import torch

    from cryolab.errors import InputError
    from cryolab.io import read_mrc
    from cryolab.masks import check_mask

    if pixel_size is not None and not pixel_size > 0:
        raise InputError(f"--pixel-size must be positive, got {pixel_size}")
    mrcs = [read_mrc(half1), read_mrc(half2)]
    for path, mrc in zip((half1, half2), mrcs):
        if mrc.data.ndim != 3 or len(set(mrc.data.shape)) != 1:
            raise InputError(f"a half map must be a cubic (N, N, N) volume, got shape {mrc.data.shape}", path)
        if mrc.data.shape[0] < 8:
            raise InputError(f"the box is too small for an FSC: {mrc.data.shape}", path)
    if mrcs[0].data.shape != mrcs[1].data.shape:
        raise InputError(f"the half maps differ in size: {mrcs[0].data.shape} and {mrcs[1].data.shape}", half2)
    header_sizes = [m.pixel_size_A for m in mrcs]
    if pixel_size is None:
        if None in header_sizes:
            raise InputError("no pixel size: the header voxel size is 0; give --pixel-size", half1 if header_sizes[0] is None else half2)
        if abs(header_sizes[0] - header_sizes[1]) > 1e-3 * header_sizes[0]:
            raise InputError(f"the half maps differ in pixel size: {header_sizes[0]:g} and {header_sizes[1]:g} Å; give --pixel-size to override", half2)
        pixel_size = header_sizes[0]
    mask = None
    if mask_path is not None:
        mask_mrc = read_mrc(mask_path)
        # Compare with the maps' header (what the files say), or the override where they have none.
        reference = header_sizes[0] if header_sizes[0] is not None else pixel_size
        mask = check_mask(mask_mrc.data, mrcs[0].data.shape, pixel_size_A=reference,
                          mask_pixel_size_A=mask_mrc.pixel_size_A, path=mask_path)
    return torch.from_numpy(mrcs[0].data), torch.from_numpy(mrcs[1].data), mask, float(pixel_size)


def fsc_figure(path, frequencies, curves: dict, resolution, *, title: str = ""):
    """Save the FSC curves (:func:`cryolab.plot.fsc_curves_figure`) as ``path``; returns the report entry."""
    from cryolab.plot import fsc_curves_figure
    from cryolab.report import Figure, save_figure

    save_figure(fsc_curves_figure(frequencies, curves, resolution, title=title), path)
    return Figure(path.name, "Fourier shell correlation", f"Resolution {resolution.resolution_A:.2f} Å at FSC = {resolution.threshold:g} "
                  f"(last shell above, RELION's rule); {resolution.interpolated_resolution_A:.2f} Å interpolated.")


def fsc_table(frequencies, box_size: int, pixel_size_A: float, columns: dict):
    """The fsc.csv table: shell, frequency_per_A, resolution_A and one column per curve."""
    import numpy as np
    import pandas as pd

    shells = np.arange(len(frequencies))
    with np.errstate(divide="ignore"):
        resolution = np.where(shells > 0, box_size * pixel_size_A / np.maximum(shells, 1), np.inf)
    table = pd.DataFrame({"shell": shells, "frequency_per_A": np.asarray(frequencies), "resolution_A": resolution})
    for name, curve in columns.items():
        table[name] = np.asarray(curve)
    return table


def _resolution_record(resolution):
    import math

    def clean(x):
        return None if not math.isfinite(x) else round(float(x), 4)

    return {
        "threshold": resolution.threshold,
        "shell": resolution.shell,
        "resolution_A": clean(resolution.resolution_A),
        "interpolated_resolution_A": clean(resolution.interpolated_resolution_A),
    }


def main(args, out) -> None:
    import json

    from cryolab.errors import InputError
    from cryolab.validate import fsc, fsc_resolution, fsc_shell_frequencies, masked_fsc_corrected

    if not 0 < args.threshold < 1:
        raise InputError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.cones < 0:
        raise InputError(f"--cones must be >= 0, got {args.cones}")
    if not 0 < args.cone_angle_deg <= 90:
        raise InputError(f"--cone-angle-deg must be in (0, 90], got {args.cone_angle_deg}")
    if not 0 < args.randomize_at_fsc < 1:
        raise InputError(f"--randomize-at-fsc must be between 0 and 1, got {args.randomize_at_fsc}")
    map_a, map_b, mask, pixel_size_A = read_half_maps(args.half1, args.half2, args.mask, args.pixel_size)
    n = map_a.shape[0]
    frequencies = fsc_shell_frequencies(n, pixel_size_A)

    if mask is None:
        unmasked = fsc(map_a, map_b)
        final = unmasked
        columns = {"fsc": unmasked}
        curves = {"unmasked": (unmasked, "C0-")}
    else:
        masked = masked_fsc_corrected(map_a, map_b, mask, randomize_at_fsc=args.randomize_at_fsc, seed=args.seed)
        final = masked.corrected
        columns = {"fsc": masked.unmasked, "fsc_masked": masked.masked,
                   "fsc_phase_randomized_masked": masked.randomized_masked, "fsc_corrected": masked.corrected}
        curves = {"unmasked": (masked.unmasked, "C2-"), "masked": (masked.masked, "C0-"),
                  f"phase-randomised beyond shell {masked.randomize_from_shell}, masked": (masked.randomized_masked, "C1-"),
                  "corrected (reported)": (masked.corrected, "k-")}
    resolution = fsc_resolution(final, n, pixel_size_A, args.threshold)
    fsc_table(frequencies, n, pixel_size_A, columns).to_csv(out.path("fsc.csv"), index=False, float_format="%.6g")
    fsc_figure(out.path("fsc.png"), frequencies, curves, resolution,
               title=f"{n}³ box, {pixel_size_A:g} Å/px" + (", masked and corrected" if mask is not None else ""))

    summary = {
        "box_size": n,
        "pixel_size_A": pixel_size_A,
        "curve": "corrected masked FSC" if mask is not None else "unmasked FSC",
        "resolution": _resolution_record(resolution),
        "resolution_fsc_0.5": _resolution_record(fsc_resolution(final, n, pixel_size_A, 0.5)),
    }
    if mask is not None:
        summary["mask"] = {"file": str(args.mask), "randomize_from_shell": masked.randomize_from_shell,
                           "randomize_from_A": round(n * pixel_size_A / masked.randomize_from_shell, 4), "seed": args.seed,
                           "unmasked_resolution": _resolution_record(fsc_resolution(masked.unmasked, n, pixel_size_A, args.threshold))}
    if args.cones:
        summary["directional"] = _directional(args, out, map_a, map_b, mask, pixel_size_A)
    out.path("fsc.json").write_text(json.dumps(summary, indent=2) + "\n")


def _directional(args, out, map_a, map_b, mask, pixel_size_A) -> dict:
    import math

    import numpy as np
    import pandas as pd

    from cryolab.report import plt, save_figure
    from cryolab.validate import directional_fsc, fsc_shell_frequencies

    result = directional_fsc(map_a, map_b, pixel_size_A, n_directions=args.cones, half_angle_deg=args.cone_angle_deg,
                             mask=mask, threshold=args.threshold)
    d = result.directions.numpy()
    resolution = result.resolution_A.numpy()
    table = pd.DataFrame({"x": d[:, 0], "y": d[:, 1], "z": d[:, 2],
                          "azimuth_deg": np.degrees(np.arctan2(d[:, 1], d[:, 0])),
                          "polar_deg": np.degrees(np.arccos(np.clip(d[:, 2], -1, 1))), "resolution_A": resolution})
    table.to_csv(out.path("directional_fsc.csv"), index=False, float_format="%.5g")

    frequencies = fsc_shell_frequencies(map_a.shape[0], pixel_size_A).numpy()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
    finite = np.isfinite(resolution)
    sc = ax0.scatter(table.azimuth_deg, 90 - table.polar_deg, c=np.where(finite, resolution, np.nan), cmap="viridis_r", s=25)
    fig.colorbar(sc, ax=ax0, label=f"resolution at FSC {args.threshold:g} (Å)")
    ax0.set_xlabel("azimuth (°)")
    ax0.set_ylabel("elevation (°)")
    ax0.set_xlim(-180, 180)
    ax0.set_ylim(-90, 90)
    ax0.set_title(f"{len(d)} cones of {args.cone_angle_deg:g}°, sphericity {result.sphericity:.3f}", fontsize=10)
    ax1.plot(frequencies, result.curves.numpy().T, color="0.75", lw=0.5)
    if finite.any():
        shown = np.where(finite, resolution, np.nan)
        best, worst = int(np.nanargmin(shown)), int(np.nanargmax(shown))
        ax1.plot(frequencies, result.curves[best].numpy(), "C0", lw=1.5, label=f"best direction, {resolution[best]:.2f} Å")
        ax1.plot(frequencies, result.curves[worst].numpy(), "C3", lw=1.5, label=f"worst direction, {resolution[worst]:.2f} Å")
        ax1.legend(fontsize=8)
    ax1.axhline(args.threshold, color="0.4", ls="--", lw=0.8)
    ax1.set_xlim(0, frequencies[-1])
    ax1.set_ylim(-0.1, 1.05)
    ax1.set_xlabel("spatial frequency (1/Å)")
    ax1.set_ylabel("conical FSC")
    from cryolab.plot import add_resolution_axis

    add_resolution_axis(ax1)
    save_figure(fig, out.path("directional_fsc.png"))

    def clean(x):
        return None if not math.isfinite(float(x)) else round(float(x), 4)

    return {"n_directions": len(d), "cone_half_angle_deg": args.cone_angle_deg, "sphericity": clean(result.sphericity),
            "best_resolution_A": clean(np.nanmin(np.where(finite, resolution, np.nan))) if finite.any() else None,
            "worst_resolution_A": clean(np.nanmax(np.where(finite, resolution, np.nan))) if finite.any() else None,
            "method": "interpolated crossing"}
