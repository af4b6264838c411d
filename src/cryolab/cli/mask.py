"""Make a soft mask for a map: threshold → extend → soft edge (like relion_mask_create), or a sphere.

Threshold mask: voxels of MAP (optionally low-pass filtered first, --lowpass-A) at or above
--threshold, grown by every voxel closer than --extend-A (a negative value shrinks it), with a
raised-cosine edge falling from 1 to 0 over --soft-edge-A beyond it. Spherical mask: 1 within
--sphere-radius-A of the box centre (N//2), raised-cosine edge over --soft-edge-A. The mask has
MAP's box and pixel size; all lengths are in Å (relion_mask_create takes pixels).

Writes into the output folder:

  mask.mrc   float32 mask in [0, 1], with MAP's pixel size
  mask.png   central slices of MAP (x, y and z sections) with the mask's 0.5 contour and edge

Examples:
  cryolab mask postprocess.mrc --threshold 0.02 --lowpass-A 15 --extend-A 3 --soft-edge-A 6 -o mask
  cryolab mask half1.mrc --sphere-radius-A 60 --soft-edge-A 10 -o sphere
"""

from __future__ import annotations


def add_args(parser) -> None:
    parser.add_argument("map", metavar="MAP", help="map (MRC) whose box and pixel size the mask takes, and that is thresholded")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--threshold", type=float, metavar="DENSITY", help="density threshold in MAP's units (threshold mask)")
    kind.add_argument("--sphere-radius-A", type=float, metavar="Å", help="radius in Å of a spherical mask about the box centre")
    parser.add_argument("--extend-A", type=float, default=0.0, metavar="Å",
                        help="with --threshold: grow the thresholded region by this distance in Å (negative shrinks; default 0)")
    parser.add_argument("--soft-edge-A", type=float, default=0.0, metavar="Å",
                        help="width in Å of the raised-cosine edge outside the region or sphere (default 0: hard edge)")
    parser.add_argument("--lowpass-A", type=float, metavar="Å",
                        help="with --threshold: low-pass filter MAP at this resolution in Å before thresholding (default: none)")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å; overrides MAP's header")


def main(args, out) -> None:
    import torch

    from cryolab.errors import InputError
    from cryolab.io import read_mrc, write_mrc
    from cryolab.masks import spherical_mask, threshold_mask

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise InputError(f"--pixel-size must be positive, got {args.pixel_size}")
    if args.soft_edge_A < 0:
        raise InputError(f"--soft-edge-A must be >= 0, got {args.soft_edge_A}")
    if args.sphere_radius_A is not None and (args.extend_A != 0 or args.lowpass_A is not None):
        raise InputError("--extend-A and --lowpass-A apply to --threshold masks, not to --sphere-radius-A")
    mrc = read_mrc(args.map)
    volume = mrc.data
    if volume.ndim != 3:
        raise InputError(f"MAP must be a 3D volume, got shape {volume.shape}", args.map)
    pixel_size_A = args.pixel_size if args.pixel_size is not None else mrc.pixel_size_A
    if pixel_size_A is None:
        raise InputError("no pixel size: the header voxel size is 0; give --pixel-size", args.map)

    if args.sphere_radius_A is not None:
        if len(set(volume.shape)) != 1:
            raise InputError(f"a spherical mask needs a cubic map, got shape {volume.shape}", args.map)
        if not args.sphere_radius_A > 0:
            raise InputError(f"--sphere-radius-A must be positive, got {args.sphere_radius_A}")
        mask = spherical_mask(volume.shape[0], pixel_size_A, args.sphere_radius_A, soft_edge_A=args.soft_edge_A)
        what = f"sphere of radius {args.sphere_radius_A:g} Å, soft edge {args.soft_edge_A:g} Å"
    else:
        try:
            mask = threshold_mask(torch.from_numpy(volume), pixel_size_A, args.threshold, extend_A=args.extend_A,
                                  soft_edge_A=args.soft_edge_A, lowpass_A=args.lowpass_A)
        except InputError as exc:
            raise InputError(exc.problem, args.map) from None
        what = (f"threshold {args.threshold:g}" + (f" after a {args.lowpass_A:g} Å low-pass" if args.lowpass_A else "")
                + f", extended {args.extend_A:g} Å, soft edge {args.soft_edge_A:g} Å")
    write_mrc(out.path("mask.mrc"), mask, pixel_size_A)
    _figure(out.path("mask.png"), volume, mask.numpy(), pixel_size_A, what)


def _figure(path, volume, mask, pixel_size_A, what):
    import numpy as np

    from cryolab.report import plt, save_figure

    c = [s // 2 for s in volume.shape]
    sections = [("z section (x-y)", volume[c[0]], mask[c[0]]), ("y section (x-z)", volume[:, c[1]], mask[:, c[1]]),
                ("x section (y-z)", volume[:, :, c[2]], mask[:, :, c[2]])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, (title, image, m) in zip(axes, sections):
        h, w = image.shape
        extent = (-(w // 2) * pixel_size_A, (w - w // 2) * pixel_size_A, -(h // 2) * pixel_size_A, (h - h // 2) * pixel_size_A)
        ax.imshow(image, cmap="gray", origin="lower", extent=extent)
        if m.max() > m.min():
            levels = [lv for lv in (0.01, 0.5, 0.99) if m.min() < lv < m.max()]
            ax.contour(m, levels=levels, colors=["C1", "C3", "C2"][: len(levels)], linewidths=1, origin="lower", extent=extent)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Å")
    fig.suptitle(f"mask: {what} (contours at 0.01, 0.5, 0.99); volume fraction {float(np.mean(mask)):.3f}", fontsize=10)
    save_figure(fig, path)
