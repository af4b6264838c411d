"""Regenerate ``validate_relion_reference.npz``: RELION 3.1.3's FSC, B-factor and masks on small half maps.

Run once with RELION 3.1.3 on the PATH (``relion_postprocess``, ``relion_mask_create``)::

    .venv/bin/python tests/data/make_validate_reference.py

The tests never run RELION: they read the stored half maps and RELION's numbers and compute
the same things with ``cryolab.validate``, ``cryolab.postprocess`` and ``cryolab.masks``.
Provenance notes: ``validate_relion_reference.md`` beside this script.

Inputs (deterministic): the Coulomb potential of the built-in adenylate kinase (4AKE chain A,
``cryolab.atoms.builtin_model("adk_open")``) in a 64³ box at 2 Å/px with a global B of 300 Å²;
two half maps = potential + independent white Gaussian noise (numpy PCG64, seed 20240601,
σ = 0.6 × the potential's standard deviation), rounded to float16 and stored; RELION read the
same float16 values written as float32 MRC files, so the test's inputs are bit-identical.
A spherical mask (radius 30 Å, soft edge 8 Å, ``cryolab.masks.spherical_mask``) is stored as
float16 too and given to RELION as float32.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import starfile
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "validate_relion_reference.npz"
BOX, PIXEL_A, SEED = 64, 2.0, 20240601
MASK_THRESHOLD, MASK_EXTEND_PX, MASK_EDGE_PX, MASK_LOWPASS_A = 1.0, 2, 3, 15.0


def write(path: Path, data: np.ndarray) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
        mrc.voxel_size = PIXEL_A


def run(cmd: list[str], cwd: Path, log: list) -> None:
    log.append(" ".join(cmd))
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    # RELION 3.1.3 without --mask writes the map and the general and fsc tables of the STAR
    # file, then dies drawing its EPS plot ("addToCPlot2D ERROR: cannot find y-axis label")
    # before the guinier table: accept that, the tables it wrote are complete.
    plot_crash = "cannot find y-axis label" in result.stdout + result.stderr
    if result.returncode != 0 and not plot_crash:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
    if plot_crash:
        log.append("  (exited in its EPS plot after writing the map, general and fsc tables)")


def main() -> None:
    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.masks import spherical_mask
    from cryolab.validate import fsc, fsc_resolution

    truth = atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL_A, bfactor_A2=300.0).numpy()
    rng = np.random.default_rng(SEED)
    sigma = 0.6 * float(truth.std())
    halves = np.stack([truth + sigma * rng.standard_normal(truth.shape) for _ in range(2)]).astype(np.float16)
    mask = spherical_mask(BOX, PIXEL_A, 30.0, soft_edge_A=8.0).numpy().astype(np.float16)
    h1, h2 = (h.astype(np.float32) for h in halves)
    average = 0.5 * (h1 + h2)
    # The B-factor fit range ends at the final resolution. RELION's default (--autob_highres 0)
    # fits as far as the FSC-weighted amplitudes are nonzero, so give it a limit: half a shell
    # beyond the final shell (RELION's own rule, computed here the same way), which includes
    # the final shell whatever the rounding of the comparison (RELION 3.1.3 drops a shell whose
    # resolution equals --autob_highres exactly).
    final_shell = fsc_resolution(fsc(h1, h2), BOX, PIXEL_A).shell
    final_A = BOX * PIXEL_A / (final_shell + 0.5)

    log: list[str] = []
    version = subprocess.run(["relion_postprocess", "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write(tmp / "half1.mrc", h1)
        write(tmp / "half2.mrc", h2)
        write(tmp / "mask.mrc", mask.astype(np.float32))
        write(tmp / "average.mrc", average)
        common = ["relion_postprocess", "--i", "half1.mrc", "--i2", "half2.mrc", "--angpix", str(PIXEL_A),
                  "--auto_bfac", "--autob_lowres", "10", "--autob_highres", repr(final_A), "--low_pass", "-1"]
        for key in ("unmasked", "masked", "default_highres"):
            (tmp / key).mkdir()  # RELION puts logfile.pdf in the folder of --o
        run(common + ["--o", "unmasked/postprocess"], tmp, log)
        run(common + ["--mask", "mask.mrc", "--o", "masked/postprocess"], tmp, log)
        run(["relion_postprocess", "--i", "half1.mrc", "--i2", "half2.mrc", "--angpix", str(PIXEL_A),
             "--auto_bfac", "--autob_lowres", "10", "--low_pass", "-1", "--o", "default_highres/postprocess"], tmp, log)
        run(["relion_mask_create", "--i", "average.mrc", "--o", "thresh_mask.mrc", "--ini_threshold", str(MASK_THRESHOLD),
             "--extend_inimask", str(MASK_EXTEND_PX), "--width_soft_edge", str(MASK_EDGE_PX),
             "--lowpass", str(MASK_LOWPASS_A), "--angpix", str(PIXEL_A)], tmp, log)

        arrays: dict[str, np.ndarray] = {}
        for key in ("unmasked", "masked", "default_highres"):
            star = starfile.read(tmp / key / "postprocess.star", always_dict=True)
            general = star["general"]
            general = general.iloc[0] if hasattr(general, "iloc") else general
            arrays[f"{key}_resolution_A"] = np.float64(general["rlnFinalResolution"])
            arrays[f"{key}_bfactor_A2"] = np.float64(general["rlnBfactorUsedForSharpening"])
            arrays[f"{key}_guinier_slope"] = np.float64(general["rlnFittedSlopeGuinierPlot"])
            arrays[f"{key}_guinier_intercept"] = np.float64(general["rlnFittedInterceptGuinierPlot"])
            table = star["fsc"]
            for column in table.columns:
                if column.startswith("rlnFourierShellCorrelation") or column.startswith("rlnCorrectedFourierShellCorrelation"):
                    arrays[f"{key}_{column}"] = table[column].to_numpy(np.float64)
            guinier = star.get("guinier")  # missing where RELION died plotting (see run())
            for column in (guinier.columns if guinier is not None else []):
                arrays[f"{key}_guinier_{column}"] = guinier[column].to_numpy(np.float64)
            with mrcfile.open(tmp / key / "postprocess.mrc") as mrc:
                sharpened = np.asarray(mrc.data, dtype=np.float32)
            c = BOX // 2
            arrays[f"{key}_map_slices"] = np.stack([sharpened[c], sharpened[:, c], sharpened[:, :, c]])
            arrays[f"{key}_map_std"] = np.float64(sharpened.std())
            if key == "masked":
                arrays["masked_randomise_from_A"] = np.float64(general["rlnRandomiseFrom"])
        with mrcfile.open(tmp / "thresh_mask.mrc") as mrc:
            arrays["threshold_mask"] = np.asarray(mrc.data, dtype=np.float16)

    provenance = {
        "relion": version,
        "date": datetime.date.today().isoformat(),
        "commands": log,
        "inputs": f"adk_open potential, box {BOX}, {PIXEL_A} A/px, B 300 A^2; noise sigma {sigma:.6g} (0.6 x potential std), numpy PCG64 seed {SEED}; float16",
        "autob_highres_A": final_A, "autob_highres_note": "half a shell beyond the final (unmasked) shell",
        "threshold_mask": {"input": "average of the two half maps", "ini_threshold": MASK_THRESHOLD,
                           "extend_inimask_px": MASK_EXTEND_PX, "width_soft_edge_px": MASK_EDGE_PX, "lowpass_A": MASK_LOWPASS_A},
    }
    np.savez_compressed(OUT, half_maps=halves, mask=mask, pixel_size_A=np.float64(PIXEL_A),
                        provenance=np.array(json.dumps(provenance, indent=1)), **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
    for key in sorted(arrays):
        if arrays[key].ndim == 0:
            print(f"  {key} = {float(arrays[key]):.6g}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
