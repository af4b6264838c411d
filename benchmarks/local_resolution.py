"""Benchmark: cryolab.validate.local_resolution against relion_postprocess --locres on the same half maps.

Makes two half maps of the built-in adenylate kinase (Coulomb potential, independent white noise
in each half) whose resolution varies across the molecule: the potential at B = 50 Å² for
x < 0 and B = 300 Å² for x >= 0, blended over 10 Å. A soft spherical mask covers the molecule.
Then times

  relion_postprocess --locres --i half1.mrc --i2 half2.mrc --angpix P --mask mask.mrc
                     --locres_sampling S --locres_randomize_at R --o relion/relion
  cryolab.validate.local_resolution(half1, half2, P, mask=mask, window_A=3 S)   (library), in four
      variants: the default (interpolated crossing, no correction); with randomize_at_A=R; with
      crossing="last_above"; and both (the RELION-matching settings)
  cryolab local-res half1.mrc half2.mrc --mask mask.mrc --window-A 3S           (command)

RELION's local mask is a sphere of radius S/2 with a raised-cosine edge S wide, i.e. it reaches
zero at 1.5 S from its centre; cryolab's window of 3 S reaches zero at the same radius (flat to
0.75 S). RELION samples every S Å and corrects each local FSC by phase randomisation beyond R;
cryolab samples every --step-voxels voxels and randomises only when asked (randomize_at_A, the
same R as RELION in the variants that do). Prints for RELION and each cryolab variant the wall
time, the min / median / max local resolution inside the mask (>= 0.5) and the medians of each
half of the box, and for each cryolab variant the voxelwise Pearson correlation with RELION's
map there and the median of the voxelwise difference cryolab - RELION (Å).

    .venv/bin/python benchmarks/local_resolution.py [--box 64] [--pixel-size 1.5] [--sampling-A 10]

Needs RELION 3.1 (relion_postprocess) on the PATH; skips with a message otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=64, help="box size in pixels (default 64)")
    parser.add_argument("--pixel-size", type=float, default=1.5, help="pixel size in Å (default 1.5)")
    parser.add_argument("--sampling-A", type=float, default=10.0, help="RELION's --locres_sampling in Å (default 10)")
    parser.add_argument("--randomize-at-A", type=float, default=15.0, help="RELION's --locres_randomize_at in Å (default 15)")
    parser.add_argument("--step-voxels", type=int, default=3, help="cryolab's grid step in voxels (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("relion_postprocess") is None:
        print("relion_postprocess not found on the PATH: benchmark skipped (install RELION 3.1 to run it)")
        return

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import read_mrc, write_mrc
    from cryolab.masks import soft_edge_from_distance, spherical_mask
    from cryolab.validate import local_resolution

    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    n, pixel = args.box, args.pixel_size
    model = builtin_model("adk_open")
    sharp = atoms_to_potential(model, n, pixel, bfactor_A2=50.0)
    blurred = atoms_to_potential(model, n, pixel, bfactor_A2=300.0)
    x_A = (torch.arange(n, dtype=torch.float32) - n // 2) * pixel
    weight_blurred = 1 - soft_edge_from_distance(x_A + 5.0, 10.0)  # 0 for x <= -5 Å, 1 from x >= 5 Å
    truth = sharp + weight_blurred * (blurred - sharp)
    g = torch.Generator().manual_seed(1_000_003 + args.seed)
    sigma = 0.5 * float(truth.std())
    half1 = truth + sigma * torch.randn(truth.shape, generator=g)
    half2 = truth + sigma * torch.randn(truth.shape, generator=g)
    mask = spherical_mask(n, pixel, 30.0, soft_edge_A=6.0)
    window_A = 3 * args.sampling_A

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, data in (("half1.mrc", half1), ("half2.mrc", half2), ("mask.mrc", mask)):
            write_mrc(tmp / name, data, pixel)

        variants = {
            "cryolab default": {},
            f"cryolab randomise at {args.randomize_at_A:g} Å": {"randomize_at_A": args.randomize_at_A},
            "cryolab last-shell crossing": {"crossing": "last_above"},
            "cryolab RELION-matching": {"randomize_at_A": args.randomize_at_A, "crossing": "last_above"},
        }
        ours = {}
        for name, options in variants.items():
            ours[name] = timed(lambda: local_resolution(half1, half2, pixel, mask=mask, window_A=window_A,
                                                        step_voxels=args.step_voxels, **options))

        (tmp / "relion").mkdir()
        cmd = ["relion_postprocess", "--locres", "--i", "half1.mrc", "--i2", "half2.mrc", "--angpix", str(pixel),
               "--mask", "mask.mrc", "--locres_sampling", str(args.sampling_A), "--locres_randomize_at", str(args.randomize_at_A),
               "--o", "relion/relion"]
        t_relion, result = timed(lambda: subprocess.run(cmd, cwd=tmp, capture_output=True, text=True))
        locres_file = tmp / "relion" / "relion_locres.mrc"
        if not locres_file.exists():
            sys.exit(f"relion_postprocess --locres failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        theirs = read_mrc(locres_file).data

        cli = [sys.executable, "-m", "cryolab.cli", "local-res", "half1.mrc", "half2.mrc", "--mask", "mask.mrc",
               "--window-A", str(window_A), "--step-voxels", str(args.step_voxels), "-o", "cryolab_out"]
        t_cli, _ = timed(lambda: subprocess.run(cli, cwd=tmp, check=True, capture_output=True))

    inside = (mask >= 0.5).numpy()
    relion = theirs[inside]
    usable = np.isfinite(relion) & (relion > 0)
    left, right = inside.copy(), inside.copy()
    left[..., n // 2:] = False
    right[..., : n // 2] = False

    print(f"half maps {n}³ at {pixel:g} Å/px (adk, B 50 Å² for x < 0, 300 Å² for x > 0), mask r 30 Å + 6 Å edge; "
          f"torch threads {torch.get_num_threads()}")
    any_result = next(iter(ours.values()))[1]
    print(f"RELION --locres_sampling {args.sampling_A:g} Å (local mask to {1.5 * args.sampling_A:g} Å), randomise at "
          f"{args.randomize_at_A:g} Å; cryolab window {window_A:g} Å ({any_result.window_voxels} voxels), step {args.step_voxels} voxels")
    print(f"{'':34s}{'wall s':>8s}{'min Å':>8s}{'median Å':>10s}{'max Å':>8s}{'med x<0':>9s}{'med x>0':>9s}"
          f"{'r RELION':>10s}{'med diff Å':>12s}")
    print(f"{'relion_postprocess --locres':34s}{t_relion:8.2f}{relion.min():8.2f}{np.median(relion):10.2f}{relion.max():8.2f}"
          f"{np.median(theirs[left]):9.2f}{np.median(theirs[right]):9.2f}")
    for name, (t, result) in ours.items():
        full = result.resolution_A.numpy()
        mine = full[inside]
        correlation = np.corrcoef(mine[usable], relion[usable])[0, 1]
        difference = np.median(mine[usable] - relion[usable])
        print(f"{name:34s}{t:8.2f}{mine.min():8.2f}{np.median(mine):10.2f}{mine.max():8.2f}"
              f"{np.median(full[left]):9.2f}{np.median(full[right]):9.2f}{correlation:10.3f}{difference:12.2f}")
    t_lib = ours["cryolab default"][0]
    print(f"{'cryolab local-res (command)':34s}{t_cli:8.2f}   (reads MRCs, global FSC, B-factor, local filter, plots; start-up)")
    print(f"time ratio relion / cryolab default: library {t_relion / t_lib:.1f}x, command {t_relion / t_cli:.1f}x")
    print(f"r RELION: voxelwise Pearson correlation with RELION's map inside the mask; med diff: median of cryolab - RELION "
          f"there ({usable.sum()} of {inside.sum()} voxels with a RELION value)")


if __name__ == "__main__":
    main()
