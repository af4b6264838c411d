"""Generate maps from a trained heterogeneity model (cryolab train-vae) at chosen latent coordinates.

The decoder is evaluated on the 3D Fourier grid of the requested box and inverse transformed
(cryolab.heterogeneity.volumes): each map is real, centred at box//2 (docs/conventions.md),
on the scale of the training images (its projections reproduce them), with its voxel size in
the MRC header. A homogeneous model (--zdim 0) needs no latent coordinates.

Writes into the output folder:

  vol_000.mrc, vol_001.mrc, …   one map per latent coordinate, in the order given
  z_values.txt                  the latent coordinates, one row per map
  volumes.png, index.html       projections of the maps along z

Examples:
  cryolab eval-vol vae/checkpoints/epoch_020.pt --z "0.1,-0.3,0,0,0,0,0,0" --z=-1,0,0,0,0,0,0,0 -o maps
  cryolab eval-vol vae/checkpoints/epoch_020.pt --z-file centers.txt --box 128 -o maps
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoints/epoch_NNN.pt written by cryolab train-vae")
    parser.add_argument("--z", action="append", metavar="Z1,Z2,...",
                        help="one latent coordinate: zdim numbers separated by commas (repeat for several maps); "
                             "write --z=-1,0.5 when the first number is negative")
    parser.add_argument("--z-file", metavar="FILE",
                        help="latent coordinates, one row per map: .npy (M, zdim) or text (numbers separated by spaces or commas)")
    parser.add_argument("--box", type=int, metavar="PX",
                        help="box of the maps in voxels (default: the training box); the voxel size is scaled to match")
    parser.add_argument("--batch-size", type=int, default=32768, metavar="K", help="Fourier points per decoder call (memory; default 32768)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to evaluate (default cpu)")
    parser.add_argument("--threads", type=int, metavar="T", help="CPU threads (default: the cores not busy with other work)")


def _read_z_file(path, zdim: int):
    from pathlib import Path

    import numpy as np

    from cryolab.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("latent file not found", path)
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            rows = [line.replace(",", " ").split() for line in path.read_text().splitlines()]
            values = np.array([[float(v) for v in row] for row in rows if row and not row[0].startswith("#")])
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read latent coordinates: {exc}", path) from None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 and zdim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != zdim or values.shape[0] == 0:
        raise InputError(f"latent coordinates have shape {values.shape}, expected (M, {zdim}) for this {zdim}-dimensional model", path)
    if not np.isfinite(values).all():
        raise InputError("latent coordinates contain NaN or infinite values", path)
    return values


def _parse_z(texts, zdim: int):
    import numpy as np

    from cryolab.errors import InputError

    rows = []
    for text in texts:
        try:
            row = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise InputError(f"--z {text!r}: expected numbers separated by commas") from None
        if len(row) != zdim:
            raise InputError(f"--z {text!r} has {len(row)} numbers but the model's latent space has {zdim} dimensions")
        rows.append(row)
    return np.array(rows, dtype=np.float64)


def main(args, out) -> None:
    import numpy as np
    import torch

    from cryolab.errors import InputError
    from cryolab.heterogeneity import choose_num_threads, generate_volumes, load_checkpoint, volume_pixel_size_A, write_volumes

    if args.box is not None and args.box < 8:
        raise InputError(f"--box must be at least 8 voxels, got {args.box}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no GPU")
    torch.set_num_threads(args.threads or choose_num_threads())
    model, config, epoch = load_checkpoint(args.checkpoint, device=args.device)
    zdim = config.zdim
    if args.z and args.z_file:
        raise InputError("give --z or --z-file, not both")
    if zdim == 0:
        if args.z or args.z_file:
            raise InputError("the model is homogeneous (zdim 0): it takes no latent coordinates", args.checkpoint)
        z = np.zeros((1, 0))
    elif args.z_file:
        z = _read_z_file(args.z_file, zdim)
    elif args.z:
        z = _parse_z(args.z, zdim)
    else:
        raise InputError(f"give latent coordinates with --z (zdim {zdim} numbers) or --z-file", args.checkpoint)

    volumes = generate_volumes(model, z, box_size=args.box, batch_size=args.batch_size)
    pixel_size_A = volume_pixel_size_A(model, args.box)
    write_volumes(volumes, out.path("vol_000.mrc").parent, pixel_size_A)
    np.savetxt(out.path("z_values.txt"), z.reshape(len(z), -1), fmt="%.6g",
               header=f"latent coordinates of vol_000.mrc ... (one row per map), from {args.checkpoint} (epoch {epoch})")

    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure, write_index

    shown = volumes[:16].sum(dim=1).cpu()  # projections along z
    n = volumes.shape[-1]
    half = n * pixel_size_A / 2
    titles = [f"vol_{i:03d}" for i in range(len(shown))]
    fig = image_grid(list(shown), titles, ncols=min(4, len(shown)), extent=(-half, half, -half, half),
                     suptitle=f"projections along z, {n}³ at {pixel_size_A:.3g} Å/voxel (axes in Å)")
    save_figure(fig, out.path("volumes.png"))
    write_index(out.path("index.html"), "cryolab eval-vol",
                [Figure("volumes.png", "Maps", "Sum of each map along z (first 16 maps). Open the MRC files in ChimeraX "
                                               "for 3D views.")],
                intro=f"{len(volumes)} map(s) from {args.checkpoint} (epoch {epoch}); latent coordinates in z_values.txt.")
