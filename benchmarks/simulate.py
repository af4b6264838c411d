"""Benchmark: simulate the same particles with cryolab and with RELION's relion_project --ctf.

One map (the built-in adenylate kinase, open, as a Coulomb potential), one set of poses, shifts
and CTFs. cryolab writes its images and the RELION 3.1 STAR file; relion_project then projects
the same map at the poses, shifts and CTFs of that STAR file. Both are noise-free, with RELION's
projector settings (padding 2, trilinear) and the CTF on the unpadded grid (cryolab's
``ctf_pad_factor=1``) so that the outputs should agree. Prints images/s of each, the ratio and the
per-image correlation between the two stacks; then, for information, cryolab's speed with its
default CTF canvas of twice the box. Wall time and CPU time are both printed: on a shared
machine the CPU time is the fairer measure (cryolab may use several threads, relion_project one).

    python benchmarks/simulate.py                # 10,000 particles at 128²
    python benchmarks/simulate.py -n 1000 --box 64

Skips with a message when ``relion_project`` is not on the PATH.
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


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="number of particles (default 10000)")
    parser.add_argument("--box", type=int, default=128, help="box size in pixels (default 128)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="pixel size in Å (default 1.0)")
    parser.add_argument("--batch-size", type=int, default=256, help="cryolab batch size (default 256)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for cryolab (default: torch's choice)")
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder, removed)")
    parser.add_argument("--skip-padded", action="store_true", help="do not time cryolab's default padded CTF canvas")
    args = parser.parse_args(argv)

    relion = shutil.which("relion_project")
    if relion is None:
        print("relion_project not found on PATH: skipping the cryolab vs RELION simulation benchmark.")
        return 0

    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    import mrcfile
    import numpy as np
    import torch

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import write_mrc
    from cryolab.simulate import (ParticleParameters, generator_for, sample_ctf_params, sample_shifts, uniform_poses,
                                  write_dataset)

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cryolab-bench-sim-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        n, box, px = args.n, args.box, args.pixel_size
        volume = atoms_to_potential(builtin_model("adk_open"), box, px)
        write_mrc(work / "map.mrc", volume, px)
        seed = 2024
        particles = ParticleParameters(
            uniform_poses(n, generator=generator_for(seed, "poses")),
            sample_shifts(n, sigma_A=2.0, generator=generator_for(seed, "shifts")),
            sample_ctf_params(n, defocus_min_A=8000, defocus_max_A=25000, astigmatism_max_A=600,
                              generator=generator_for(seed, "ctf")),
        )
        print(f"{n} particles, box {box}, {px} Å/px, map: adk_open potential; torch threads: {torch.get_num_threads()}; "
              f"relion_project is single-threaded")

        t0, c0 = time.perf_counter(), time.process_time()
        write_dataset(volume, particles, work / "cryolab", px, noise=None, ctf_pad_factor=1, seed=seed,
                      batch_size=args.batch_size, show_progress=False)
        t_cryolab, c_cryolab = time.perf_counter() - t0, time.process_time() - c0

        t0, c0 = time.perf_counter(), _children_cpu()
        subprocess.run([relion, "--i", str(work / "map.mrc"), "--ang", "particles.star", "--o", "relion_proj",
                        "--ctf", "--angpix", str(px)], cwd=work / "cryolab", check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t_relion, c_relion = time.perf_counter() - t0, _children_cpu() - c0

        stacks = sorted((work / "cryolab").glob("particles_*.mrcs"))
        ours = np.concatenate([mrcfile.mmap(p, permissive=True).data for p in stacks]).reshape(n, -1).astype(np.float64)
        with mrcfile.mmap(work / "cryolab" / "relion_proj.mrcs", permissive=True) as m:
            theirs = np.asarray(m.data, dtype=np.float64).reshape(n, -1)
        a = ours - ours.mean(1, keepdims=True)
        b = theirs - theirs.mean(1, keepdims=True)
        corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        scale = float(np.median(np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)))

        print(f"cryolab  (CTF on the box, as RELION): {n / t_cryolab:8.1f} images/s wall ({t_cryolab:.1f} s, "
              f"incl. writing), {n / c_cryolab:8.1f} images per CPU-second")
        print(f"relion_project --ctf:                 {n / t_relion:8.1f} images/s wall ({t_relion:.1f} s, "
              f"incl. writing), {n / c_relion:8.1f} images per CPU-second")
        print(f"ratio cryolab / RELION:               {t_relion / t_cryolab:8.2f} (wall), {c_relion / c_cryolab:.2f} (CPU)")
        print(f"per-image correlation: mean {corr.mean():.6f}, median {np.median(corr):.6f}, min {corr.min():.6f}; "
              f"RELION/cryolab amplitude ratio (median) {scale:.4f}")

        if not args.skip_padded:
            t0, c0 = time.perf_counter(), time.process_time()
            write_dataset(volume, particles, work / "cryolab_padded", px, noise=None, ctf_pad_factor=2, seed=seed,
                          batch_size=args.batch_size, show_progress=False)
            t_padded, c_padded = time.perf_counter() - t0, time.process_time() - c0
            print(f"cryolab  (default CTF canvas 2×box):  {n / t_padded:8.1f} images/s wall ({t_padded:.1f} s), "
                  f"{n / c_padded:8.1f} images per CPU-second")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
