"""Benchmark: simulate the same particles with cryolab and with RELION's relion_project --ctf.

One map (the built-in adenylate kinase, open, as a Coulomb potential), one set of poses, shifts
and CTFs. cryolab writes its images and the RELION 3.1 STAR file; relion_project then projects
the same map at the poses, shifts and CTFs of that STAR file. Both are noise-free, with RELION's
projector settings (padding 2, trilinear) and the CTF on the unpadded grid (cryolab's
``ctf_pad_factor=1``) so that the outputs should agree. Prints images/s of each, the ratio and the
per-image correlation between the two stacks; then, for information, cryolab's speed with its
default CTF canvas of twice the box, and (``--stages``) where cryolab's time goes.

Wall time and CPU time are both printed: on a shared machine the CPU time is the fairer measure
(relion_project is single-threaded). cryolab is timed once per ``--threads`` value (the
caller's torch threads; the simulation runs its own work on one thread: with two, on a busy
2-core machine, it was 4× slower). Before the timed runs,
cryolab simulates a few particles once: that loads the projector's compiled kernel (numba, cached
on disk after the first run on a machine) — a per-process start-up cost, printed separately, like
the imports of torch that neither timing includes.

    python benchmarks/simulate.py                # 10,000 particles at 128²
    python benchmarks/simulate.py -n 1000 --box 64 --threads 1

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


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _stage_breakdown(volume, particles, px, batch: int) -> None:
    """CPU time per stage of cryolab's forward model on one batch (CTF on the box), each stage run
    as write_dataset runs it (shift, CTF and FFT in chunks of ``fft_chunk_size`` images)."""
    import torch

    from cryolab.ctf import ctf_2d
    from cryolab.projection import apply_shifts_rfft, extract_central_slices_rfft
    from cryolab.rotations import relion_euler_to_matrix
    from cryolab.simulate import prepare_maps
    from cryolab.simulate.dataset import _StackWriter, fft_chunk_size

    box = volume.shape[-1]
    part = particles.select(slice(0, batch))
    rot = relion_euler_to_matrix(part.euler_deg)
    chunks = [slice(lo, min(lo + fft_chunk_size(box), batch)) for lo in range(0, batch, fft_chunk_size(box))]
    times = {}

    def stage(name, fn):
        best = None
        for _ in range(3):
            c0 = time.process_time()
            result = fn()
            c = time.process_time() - c0
            best = c if best is None else min(best, c)
        times[name] = best
        return result

    tables = stage("prepare map (once per map)", lambda: prepare_maps(volume))
    slices = stage("central slices (projector)", lambda: extract_central_slices_rfft(tables[0], rot, (box, box)))
    shifted = stage("shifts (phase ramp)", lambda: [apply_shifts_rfft(slices[c], part.shifts_A[c], px) for c in chunks])
    ctf = stage("CTF values", lambda: [ctf_2d(part.ctf[c], (box, box), px).to(torch.complex64) for c in chunks])
    product = stage("CTF multiplication", lambda: [s * c for s, c in zip(shifted, ctf)])
    images = stage("inverse FFT", lambda: torch.cat([torch.fft.irfft2(p, s=(box, box)) for p in product]))
    with tempfile.TemporaryDirectory() as folder:
        def write():
            writer = _StackWriter(Path(folder), f"s{time.monotonic_ns()}", batch, box, px, batch)
            writer.write(0, images)

        stage("write MRCS (with header statistics)", write)
    print(f"stage breakdown on {batch} images (best of 3, CPU time per image; the map is prepared once per run):")
    for name, seconds in times.items():
        print(f"  {name:38s} {seconds / batch * 1e6:9.1f} µs/image  ({seconds * 1e3:.1f} ms)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="number of particles (default 10000)")
    parser.add_argument("--box", type=int, default=128, help="box size in pixels (default 128)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="pixel size in Å (default 1.0)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="cryolab images per batch (default 1024: the projector sweeps its table once per batch)")
    parser.add_argument("--threads", default="1",
                        help="comma-separated torch thread counts to time cryolab with (default 1; the "
                             "simulation itself runs torch on one thread, see cryolab.simulate.dataset)")
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder, removed)")
    parser.add_argument("--skip-padded", action="store_true", help="do not time cryolab's default padded CTF canvas")
    parser.add_argument("--stages", action="store_true", help="also print cryolab's CPU time per stage")
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

    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
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
        print(f"{n} particles, box {box}, {px} Å/px, map: adk_open potential; cryolab batch {args.batch_size}; "
              f"relion_project is single-threaded; load average {os.getloadavg()[0]:.1f}")

        def simulate(folder, pad):
            return lambda: write_dataset(volume, particles, work / folder, px, noise=None, ctf_pad_factor=pad,
                                         seed=seed, batch_size=args.batch_size, show_progress=False)

        warm_particles = particles.select(slice(0, min(n, 8)))
        t_warm, c_warm = _timed(lambda: write_dataset(volume, warm_particles, work / "warmup", px, ctf_pad_factor=1,
                                                      show_progress=False))
        print(f"cryolab one-time start-up (compiled projector kernel, 8 images): {t_warm:.2f} s wall, "
              f"{c_warm:.2f} s CPU")

        cryolab_runs = {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            cryolab_runs[threads] = _timed(simulate("cryolab", 1))

        t_relion, c_relion = _timed(lambda: subprocess.run(
            [relion, "--i", str(work / "map.mrc"), "--ang", "particles.star", "--o", "relion_proj", "--ctf",
             "--angpix", str(px)], cwd=work / "cryolab", check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE))
        c_relion = _children_cpu()  # (the only child process)

        stacks = sorted((work / "cryolab").glob("particles_*.mrcs"))
        ours = np.concatenate([mrcfile.mmap(p, permissive=True).data for p in stacks]).reshape(n, -1).astype(np.float64)
        with mrcfile.mmap(work / "cryolab" / "relion_proj.mrcs", permissive=True) as m:
            theirs = np.asarray(m.data, dtype=np.float64).reshape(n, -1)
        a = ours - ours.mean(1, keepdims=True)
        b = theirs - theirs.mean(1, keepdims=True)
        corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        scale = float(np.median(np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)))

        for threads, (t_cryolab, c_cryolab) in cryolab_runs.items():
            print(f"cryolab  (CTF on the box, {threads} thread{'s' if threads > 1 else ' '}): {n / t_cryolab:8.1f} "
                  f"images/s wall ({t_cryolab:.1f} s, incl. writing), {n / c_cryolab:8.1f} images per CPU-second")
        print(f"relion_project --ctf:                 {n / t_relion:8.1f} images/s wall ({t_relion:.1f} s, "
              f"incl. writing), {n / c_relion:8.1f} images per CPU-second")
        for threads, (t_cryolab, c_cryolab) in cryolab_runs.items():
            print(f"ratio cryolab ({threads} thread{'s' if threads > 1 else ' '}) / RELION:   "
                  f"{t_relion / t_cryolab:8.2f} (wall), {c_relion / c_cryolab:.2f} (CPU)")
        print(f"per-image correlation: mean {corr.mean():.6f}, median {np.median(corr):.6f}, min {corr.min():.6f}; "
              f"RELION/cryolab amplitude ratio (median) {scale:.4f}")

        if not args.skip_padded:
            torch.set_num_threads(thread_counts[0])
            t_padded, c_padded = _timed(simulate("cryolab_padded", 2))
            print(f"cryolab  (default CTF canvas 2×box, {thread_counts[0]} thread(s)): {n / t_padded:8.1f} images/s "
                  f"wall ({t_padded:.1f} s), {n / c_padded:8.1f} images per CPU-second")
        if args.stages:
            torch.set_num_threads(thread_counts[0])
            _stage_breakdown(volume, particles, px, min(n, args.batch_size))
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
