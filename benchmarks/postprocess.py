"""Benchmark: cryolab.postprocess against relion_postprocess on the same half maps.

Makes two half maps (Coulomb potential of the built-in adenylate kinase, B 150 Å², plus
independent white noise) in a box of --box pixels at --pixel-size Å and a soft spherical mask,
then times

  relion_postprocess --i half1.mrc --i2 half2.mrc --angpix P --mask mask.mrc --auto_bfac
                     --autob_lowres 10 --autob_highres H --low_pass -1
  cryolab.postprocess.postprocess(half1, half2, P, mask=mask)  (library call, maps in memory)
  cryolab postprocess half1.mrc half2.mrc --mask mask.mrc     (command: reading, plots, files)

with the same B-factor fit range (10 Å to the final resolution; H is half a shell beyond it, see
tests/data/validate_relion_reference.md), and prints wall times, their ratio, the resolution
and the B-factor from each, and the largest FSC difference. RELION's phase randomisation uses
its own random numbers, so the masked B-factors differ by a few Å²; the unmasked FSC and
masked FSC before correction agree to ~1e-5.

    .venv/bin/python benchmarks/postprocess.py [--box 160] [--pixel-size 1.0] [--repeats 3]

Needs RELION 3.1 (relion_postprocess) on the PATH.
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
import starfile
import torch


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=160, help="box size in pixels (default 160)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="pixel size in Å (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("relion_postprocess") is None:
        sys.exit("relion_postprocess not found on the PATH")

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import write_mrc
    from cryolab.masks import spherical_mask
    from cryolab.postprocess import postprocess
    from cryolab.validate import fsc

    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    n, pixel = args.box, args.pixel_size
    truth = atoms_to_potential(builtin_model("adk_open"), n, pixel, bfactor_A2=150.0)
    # The noise must not come from the stream the phase randomisation draws from (a torch
    # generator with the same seed): the "random" phases would be the noise's own phases.
    g = torch.Generator().manual_seed(1_000_003 + args.seed)
    sigma = 1.0 * float(truth.std())
    half1 = truth + sigma * torch.randn(truth.shape, generator=g)
    half2 = truth + sigma * torch.randn(truth.shape, generator=g)
    mask = spherical_mask(n, pixel, 32.0, soft_edge_A=10.0)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, data in (("half1.mrc", half1), ("half2.mrc", half2), ("mask.mrc", mask)):
            write_mrc(tmp / name, data, pixel)

        # cryolab, library call (maps in memory); first call warms up FFT plans and caches
        postprocess(half1, half2, pixel, mask=mask, seed=args.seed)
        t_lib, ours = best_of(args.repeats, lambda: postprocess(half1, half2, pixel, mask=mask, seed=args.seed))
        highres = n * pixel / (ours.resolution.shell + 0.5)

        def run_relion():
            out = tmp / "relion"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            cmd = ["relion_postprocess", "--i", "half1.mrc", "--i2", "half2.mrc", "--angpix", str(pixel), "--mask", "mask.mrc",
                   "--auto_bfac", "--autob_lowres", "10", "--autob_highres", repr(highres), "--low_pass", "-1",
                   "--o", "relion/postprocess"]
            result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            star = out / "postprocess.star"
            if not star.exists():
                sys.exit(f"relion_postprocess failed:\n{result.stdout}\n{result.stderr}")
            return starfile.read(star, always_dict=True)

        t_relion, star = best_of(args.repeats, run_relion)

        def run_cli():
            out = tmp / "cryolab_out"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "cryolab.cli", "postprocess", "half1.mrc", "half2.mrc", "--mask", "mask.mrc",
                   "--seed", str(args.seed), "-o", str(out)]
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)

        t_cli, _ = best_of(args.repeats, run_cli)

    general = star["general"]
    general = general.iloc[0] if hasattr(general, "iloc") else general
    table = star["fsc"]
    fsc_unmasked_diff = np.abs(fsc(half1, half2).numpy() - table["rlnFourierShellCorrelationUnmaskedMaps"].to_numpy()).max()
    fsc_masked_diff = np.abs(ours.masked.masked.numpy() - table["rlnFourierShellCorrelationMaskedMaps"].to_numpy()).max()
    fsc_corrected_diff = np.abs(ours.masked.corrected.numpy() - table["rlnFourierShellCorrelationCorrected"].to_numpy()).max()

    print(f"half maps {n}³ at {pixel:g} Å/px, spherical mask r 32 Å + 10 Å edge; torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"{'':28s}{'wall s':>9s}{'resolution Å':>15s}{'B Å²':>10s}")
    print(f"{'relion_postprocess':28s}{t_relion:9.2f}{float(general['rlnFinalResolution']):15.3f}"
          f"{float(general['rlnBfactorUsedForSharpening']):10.1f}")
    print(f"{'cryolab postprocess()':28s}{t_lib:9.2f}{ours.resolution.resolution_A:15.3f}{ours.b_factor_A2:10.1f}")
    print(f"{'cryolab postprocess (CLI)':28s}{t_cli:9.2f}   (reads MRCs, writes maps, plots and JSON; includes start-up)")
    print(f"time ratio relion / cryolab: library {t_relion / t_lib:.1f}x, command {t_relion / t_cli:.1f}x")
    print(f"B-factor fit range 10 Å to {ours.bfactor_fit.highres_A:.3f} Å ({ours.bfactor_fit.n_points} shells)")
    spread = [postprocess(half1, half2, pixel, mask=mask, seed=seed, autob_highres_A=ours.bfactor_fit.highres_A) for seed in range(5)]
    print(f"cryolab over phase-randomisation seeds 0-4 (same fit range): resolution "
          f"{min(r.resolution.resolution_A for r in spread):.3f}-{max(r.resolution.resolution_A for r in spread):.3f} Å, "
          f"B {min(r.b_factor_A2 for r in spread):.1f} to {max(r.b_factor_A2 for r in spread):.1f} Å²")
    print(f"max |FSC difference|: unmasked {fsc_unmasked_diff:.1e}, masked {fsc_masked_diff:.1e}, "
          f"corrected {fsc_corrected_diff:.3f} (different random phases)")


if __name__ == "__main__":
    main()
