"""Benchmark: 3D reconstruction with cryolab against relion_reconstruct (and cryoDRGN if present).

One data set is made with RELION itself: the built-in adenylate kinase (open, 4AKE) as a Coulomb
potential in a 128³ box at 1 Å/px, uniform poses, shifts and astigmatic CTFs drawn by cryolab and
written to a RELION 3.1 STAR file, then ``relion_project --ang in.star --ctf --add_noise
--white_noise σ`` projects the map (σ from the signal variance of the first 256 projections and
the target SNR, over the whole box). The same STAR file (with rlnRandomSubset 1/2 alternating) is
then reconstructed by

- ``relion_reconstruct --i proj.star --o relion.mrc --ctf`` (RELION 3.1 CPU, single-threaded:
  trilinear insertion at padding 2, then 10 iterations of gridding weights, no regularisation);
- ``cryodrgn backproject_voxel`` from a side virtual environment (/work/peers/venv) if installed,
  with its defaults (poses and CTF converted by ``cryodrgn parse_pose_star/parse_ctf_star``);
- ``cryolab reconstruct proj.star --workers 1`` (half maps regularised with the SSNR from their
  FSC, the full map from both halves), single-threaded like RELION 3.1, and again with
  ``--workers 2`` (the default on 2 cores: blocks of the half sets back-projected side by side
  into their own grids, maps finalised side by side). Every cryolab thread runs torch
  single-threaded (``OMP_NUM_THREADS=1``).

Each runs as its own process under ``/usr/bin/time`` (cryolab right after RELION, cryoDRGN last,
so that RELION and cryolab meet the most similar load on a shared machine): wall time, CPU time
(user + system), peak resident memory and the load average at the start are printed, with the
FSC of each map against the noise-free truth and the resolution where it crosses 0.5 (cryolab's
half-map FSC at 0.143 too), and the ratios to RELION. On a shared machine the CPU time is the
steadier measure; a second worker only shortens the wall time when a second core is free.

    python benchmarks/reconstruct.py -n 2000            # quick
    python benchmarks/reconstruct.py                    # 10,000 particles at 128²
    python benchmarks/reconstruct.py --keep-workdir     # keep the data set and the maps

Skips with a message when ``relion_project`` / ``relion_reconstruct`` are not on the PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CRYODRGN = Path("/work/peers/venv/bin/cryodrgn")


def _timed(cmd, cwd, env=None, log=None) -> dict:
    """Run ``cmd`` under /usr/bin/time; wall s, CPU s and peak RSS (MiB) of that process, and the
    machine's 1-minute load average when it started."""
    stats = Path(cwd) / f".time_{time.time_ns()}"
    load = os.getloadavg()[0]
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(stats), *map(str, cmd)]
    with open(log or os.devnull, "w") as out:
        proc = subprocess.run(full, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")
    wall, user, system, rss_kb = stats.read_text().split()[-4:]
    stats.unlink()
    return {"wall_s": float(wall), "cpu_s": float(user) + float(system), "peak_MiB": int(rss_kb) / 1024, "load": load}


def _star(table_path: Path, particles, pixel_size_A: float, box: int) -> None:
    import numpy as np

    from cryolab.io import write_star
    from cryolab.simulate import particle_table

    n = len(particles)
    table = particle_table(particles, pixel_size_A=pixel_size_A, box_size=box,
                           image_names=[f"{i + 1:06d}@unused.mrcs" for i in range(n)])
    table = table.drop(columns=["rlnImageName"])
    table["rlnRandomSubset"] = (np.arange(n) % 2 + 1).astype(np.int64)
    write_star(table_path, table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--n", type=int, default=10000, dest="n", help="number of particles (default 10000)")
    parser.add_argument("--box", type=int, default=128, help="box size in pixels (default 128)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="pixel size in Å (default 1.0)")
    parser.add_argument("--snr", type=float, default=0.05, help="signal-to-noise ratio over the box (default 0.05)")
    parser.add_argument("--interpolation", default="linear", choices=("linear", "nearest"),
                        help="cryolab's insertion kernel (default linear, as RELION)")
    parser.add_argument("--workers", type=int, default=2,
                        help="also time cryolab with this many threads (default 2; 1: skip)")
    parser.add_argument("--skip-cryodrgn", action="store_true", help="do not run cryoDRGN even if it is installed")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the data set and maps (printed path)")
    parser.add_argument("--workdir", help="work in this folder (implies --keep-workdir)")
    args = parser.parse_args(argv)

    if shutil.which("relion_project") is None or shutil.which("relion_reconstruct") is None:
        print("relion_project / relion_reconstruct not found on PATH: skipping the reconstruction benchmark.")
        return 0
    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    import torch

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import read_mrc, write_mrc
    from cryolab.simulate import (ParticleParameters, clean_images, generator_for, prepare_maps, sample_ctf_params,
                                  sample_shifts, uniform_poses)
    from cryolab.validate import fsc, fsc_resolution

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cryolab-bench-rec-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep_workdir or args.workdir is not None
    n, box, px = args.n, args.box, args.pixel_size
    try:
        # ---- the data set, made by relion_project ------------------------------------------
        t0 = time.perf_counter()
        truth = atoms_to_potential(builtin_model("adk_open"), box, px)
        write_mrc(work / "truth.mrc", truth, px)
        seed = 2025
        particles = ParticleParameters(
            uniform_poses(n, generator=generator_for(seed, "poses")),
            sample_shifts(n, sigma_A=2.0, generator=generator_for(seed, "shifts")),
            sample_ctf_params(n, defocus_min_A=8000, defocus_max_A=25000, astigmatism_max_A=600,
                              generator=generator_for(seed, "ctf")),
        )
        _star(work / "poses.star", particles, px, box)
        first = particles.select(slice(0, min(n, 256)))
        signal = clean_images(prepare_maps(truth), first, box, px, ctf_pad_factor=1)
        sigma = float(signal.var()) ** 0.5 / args.snr ** 0.5
        _timed(["relion_project", "--i", "truth.mrc", "--o", "proj", "--ang", "poses.star", "--ctf", "--angpix", px,
                "--add_noise", "--white_noise", f"{sigma:.6g}"], work, log=work / "relion_project.log")
        print(f"data: {n} particles, {box}² at {px} Å/px, adk_open potential, SNR {args.snr} over the box "
              f"(σ = {sigma:.4g}), CTF 0.8-2.5 µm, shifts σ 2 Å; made by relion_project in {time.perf_counter() - t0:.0f} s")
        print(f"work folder: {work}")

        results = {}
        # ---- RELION ---------------------------------------------------------------------------
        results["relion_reconstruct"] = _timed(["relion_reconstruct", "--i", "proj.star", "--o", "relion.mrc", "--ctf"],
                                               work, log=work / "relion_reconstruct.log")
        results["relion_reconstruct"]["map"] = work / "relion.mrc"
        # ---- cryolab (right after RELION: the machine's load is then most alike) ----------------
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CRYOLAB_PROGRESS": "0"}
        def cryolab(outdir, *extra):
            return [sys.executable, "-m", "cryolab.cli", "reconstruct", "proj.star", "-o", outdir,
                    "--interpolation", args.interpolation, *extra]

        results["cryolab --workers 1"] = _timed(cryolab("cryolab", "--workers", 1), work, env=env,
                                                log=work / "cryolab.log")
        results["cryolab --workers 1"]["map"] = work / "cryolab" / "reconstruction.mrc"
        if args.workers > 1:
            name = f"cryolab --workers {args.workers}"
            results[name] = _timed(cryolab("cryolab_workers", "--workers", args.workers), work, env=env,
                                   log=work / "cryolab_workers.log")
            results[name]["map"] = work / "cryolab_workers" / "reconstruction.mrc"
        # ---- cryoDRGN -------------------------------------------------------------------------
        if args.skip_cryodrgn:
            print("cryodrgn backproject_voxel: skipped (--skip-cryodrgn)")
        elif CRYODRGN.exists():
            try:
                _timed([CRYODRGN, "parse_pose_star", "proj.star", "-o", "pose.pkl", "-D", box], work)
                _timed([CRYODRGN, "parse_ctf_star", "proj.star", "-o", "ctf.pkl", "-D", box, "--Apix", px], work)
                results["cryodrgn backproject_voxel"] = _timed(
                    [CRYODRGN, "backproject_voxel", "proj.mrcs", "--poses", "pose.pkl", "--ctf", "ctf.pkl",
                     "-o", "cryodrgn"], work, log=work / "cryodrgn.log")
                results["cryodrgn backproject_voxel"]["map"] = work / "cryodrgn" / "backproject.mrc"
            except RuntimeError as exc:
                print(f"cryodrgn backproject_voxel: skipped ({exc})")
        else:
            print(f"cryodrgn backproject_voxel: skipped ({CRYODRGN} not found; cryoDRGN is not installed in a side venv)")
        startup = _timed([sys.executable, "-c", "import cryolab.cli.reconstruct, cryolab.reconstruct, cryolab.io, "
                          "cryolab.validate, cryolab.report"], work, env=env)

        # ---- maps against the truth -------------------------------------------------------------
        reference = results["relion_reconstruct"]
        print(f"\n{'program':28s} {'wall s':>8s} {'CPU s':>8s} {'peak MiB':>9s} {'FSC=0.5 vs truth':>17s} "
              f"{'wall ratio':>10s} {'CPU ratio':>9s} {'load':>5s}")
        for name, r in results.items():
            volume = torch.from_numpy(read_mrc(r["map"]).data)
            curve = fsc(volume, truth)
            r["fsc_truth"] = curve
            r["res_0.5_A"] = fsc_resolution(curve, box, px, 0.5).interpolated_resolution_A
            print(f"{name:28s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_MiB']:9.0f} {r['res_0.5_A']:15.2f} Å "
                  f"{reference['wall_s'] / r['wall_s']:9.2f}x {reference['cpu_s'] / r['cpu_s']:8.2f}x {r['load']:5.1f}")
        summary = json.loads((work / "cryolab" / "reconstruction.json").read_text())
        print(f"\ncryolab half-map FSC: {summary['resolution_A_fsc_0.143_interpolated']} Å at 0.143 "
              f"(interpolated), {summary['resolution_A_fsc_0.5']} Å at 0.5; Python + torch + cryolab start-up "
              f"{startup['wall_s']:.1f} s wall, {startup['cpu_s']:.1f} s CPU (included above)")
        shells = [s for s in (box // 8, box // 4, 3 * box // 8, box // 2) if s <= box // 2]
        print("FSC vs truth at shells " + ", ".join(f"{s} ({box * px / s:.1f} Å)" for s in shells))
        for name, r in results.items():
            print(f"  {name:28s} " + "  ".join(f"{float(r['fsc_truth'][s]):.3f}" for s in shells))
        for name, r in results.items():
            if name.startswith("cryolab"):
                speedup = reference["wall_s"] / r["wall_s"]
                met = speedup >= 4 and r["res_0.5_A"] <= reference["res_0.5_A"]
                print(f"issue 4 target ({name}: >= 4x RELION's wall time, FSC=0.5 vs truth at least as fine): "
                      f"{speedup:.2f}x, {r['res_0.5_A']:.2f} vs {reference['res_0.5_A']:.2f} Å -> "
                      f"{'met' if met else 'not met'}")
        print(f"torch {torch.__version__}; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return 0
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
