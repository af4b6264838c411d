"""Benchmark: simulate the same particles with cryolab and with RELION's relion_project --ctf.

One map (the built-in adenylate kinase, open, as a Coulomb potential), one set of poses, shifts
and CTFs. cryolab writes its images and the RELION 3.1 STAR file; relion_project then projects
the same map at the poses, shifts and CTFs of that STAR file. Both are noise-free, with RELION's
projector settings (padding 2, trilinear) and the CTF on the unpadded grid (cryolab's
``ctf_pad_factor=1``) so that the outputs should agree. Prints images/s of each, the ratio and the
per-image correlation between the two stacks; then, for information, cryolab's speed with its
default CTF canvas of twice the box, and (``--stages``) where cryolab's time goes.

Wall time and CPU time are both printed: on a shared machine the CPU time is the fairer measure
of work (relion_project is single-threaded); the wall time is what a user waits. cryolab is timed
once per ``--workers`` value (threads computing batches in parallel, each single-threaded; the
calling thread writes; the output does not depend on the count), by default with one worker and
with one per core. Before the timed runs, cryolab simulates a few particles once: that loads the
compiled kernels (numba, cached on disk after the first run on a machine) — a per-process start-up
cost, printed separately, like the imports of torch that neither timing includes. The map's
lookup table (one 3D FFT) is part of every timed run, as in ``cryolab simulate``.

    python benchmarks/simulate.py                # 10,000 particles at 128²
    python benchmarks/simulate.py -n 1000 --box 64 --workers 1 --stages

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
    """CPU time per stage of cryolab's forward model on one batch, each stage run as write_dataset
    runs it (the projector once per batch, the rest in chunks of ``fft_chunk_size`` images, the CTF
    values in groups of chunks), for the CTF on the box and on the default canvas of twice the box."""
    import torch

    from cryolab.ctf import ctf_2d
    from cryolab.projection import extract_central_slices_rfft
    from cryolab.rotations import relion_euler_to_matrix
    from cryolab.simulate import GaussianNoise, add_noise, prepare_maps
    from cryolab.simulate._compiled import modulate_rfft, stack_statistics
    from cryolab.simulate.ctf_sampling import separable_phase_ramp
    from cryolab.simulate._buffers import mapped_empty
    from cryolab.simulate.dataset import MRC_DATA_OFFSET, _StackWriter, fft_chunk_size

    box = volume.shape[-1]
    m = 2 * box
    part = particles.select(slice(0, batch))
    chunk = fft_chunk_size(box)
    chunks = [slice(lo, min(lo + chunk, batch)) for lo in range(0, batch, chunk)]
    times = {}

    def stage(name, fn, repeats=3):
        best = None
        for _ in range(repeats):
            c0 = time.process_time()
            result = fn()
            c = time.process_time() - c0
            best = c if best is None else min(best, c)
        times[name] = best
        return result

    torch.set_num_threads(1)
    tables = stage("prepare map (once per map, 1 thread)", lambda: prepare_maps(volume), repeats=1)
    rot = relion_euler_to_matrix(part.euler_deg)
    buffer = torch.empty(batch, box, box // 2 + 1, dtype=torch.complex64)
    slices = stage("central slices (projector)", lambda: extract_central_slices_rfft(tables[0], rot, (box, box),
                                                                                     out=buffer))
    centre = torch.full((batch, 2), float(box // 2))
    ramps = stage("phase ramps (shift, recentring)", lambda: separable_phase_ramp(part.shifts_A / px - centre, (box, box)))
    ctfs = stage("CTF values (box)", lambda: [ctf_2d(part.ctf[lo:lo + 4 * chunk], (box, box), px)
                                             for lo in range(0, batch, 4 * chunk)])
    ctf_box = torch.cat(ctfs)
    work = slices.clone()
    stage("ramp × CTF product (box)", lambda: [modulate_rfft(work[c], ramp=(ramps[0][c], ramps[1][c]), ctf=ctf_box[c])
                                                for c in chunks])
    images = mapped_empty((batch, box, box), offset=MRC_DATA_OFFSET)  # (as write_dataset's: written directly)
    stage("inverse FFT (box)", lambda: [torch.fft.irfft2(work[c], s=(box, box), out=images[c]) for c in chunks])
    canvas_ctf = stage("CTF values (canvas 2×box)", lambda: [ctf_2d(part.ctf[c], (m, m), px) for c in chunks])
    spectra = stage("forward FFT (canvas)", lambda: [torch.fft.rfft2(images[c], s=(m, m)) for c in chunks])
    canvas_ramps = [separable_phase_ramp(part.shifts_A[c] / px, (m, m)) for c in chunks]
    stage("ramp × CTF product (canvas)", lambda: [modulate_rfft(s, ramp=r, ctf=v)
                                                   for s, r, v in zip(spectra, canvas_ramps, canvas_ctf)])

    def cropped_inverse():
        for spectrum in spectra:
            rows = torch.fft.ifft(spectrum.transpose(-1, -2).contiguous(), dim=-1)[..., :box].transpose(-1, -2)
            torch.fft.irfft(rows, n=m, dim=-1)[..., :box].contiguous()

    stage("cropped inverse FFT (canvas)", cropped_inverse)
    _, noisy = stage("Gaussian noise (CLI default)", lambda: add_noise(images, GaussianNoise(0.1), 0, seed=1,
                                                                      pixel_size_A=px, sigma=1.0))
    statistics = stage("stack statistics", lambda: stack_statistics(images))
    with tempfile.TemporaryDirectory() as folder:
        def write():
            writer = _StackWriter(Path(folder), f"s{time.monotonic_ns()}", batch, box, px, batch)
            writer.write(0, images, statistics)

        stage("write MRCS (direct I/O where possible)", write)
    print(f"stage breakdown on {batch} images (best of 3, CPU time per image, one thread; the map is prepared once "
          f"per run; the canvas stages replace the box's CTF product with cryolab's default --ctf-pad-factor 2):")
    for name, seconds in times.items():
        print(f"  {name:38s} {seconds / batch * 1e6:9.1f} µs/image  ({seconds * 1e3:.1f} ms)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="number of particles (default 10000)")
    parser.add_argument("--box", type=int, default=128, help="box size in pixels (default 128)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="pixel size in Å (default 1.0)")
    parser.add_argument("--batch-size", type=int,
                        help="cryolab images per batch (default: write_dataset's, 1024 at 128²: the projector "
                             "sweeps its table once per batch)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker-thread counts to time cryolab with (default: 1 and the number "
                             "of cores)")
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

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import write_mrc
    from cryolab.simulate import (ParticleParameters, generator_for, sample_ctf_params, sample_shifts, uniform_poses,
                                  write_dataset)
    from cryolab.simulate.dataset import default_batch_size, default_workers

    if args.workers is None:
        worker_counts = sorted({1, default_workers()})
    else:
        worker_counts = [int(t) for t in args.workers.split(",") if t.strip()]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cryolab-bench-sim-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        n, box, px = args.n, args.box, args.pixel_size
        batch = args.batch_size or default_batch_size(box)
        volume = atoms_to_potential(builtin_model("adk_open"), box, px)
        write_mrc(work / "map.mrc", volume, px)
        seed = 2024
        particles = ParticleParameters(
            uniform_poses(n, generator=generator_for(seed, "poses")),
            sample_shifts(n, sigma_A=2.0, generator=generator_for(seed, "shifts")),
            sample_ctf_params(n, defocus_min_A=8000, defocus_max_A=25000, astigmatism_max_A=600,
                              generator=generator_for(seed, "ctf")),
        )
        print(f"{n} particles, box {box}, {px} Å/px, map: adk_open potential; cryolab batch {batch}; "
              f"{os.cpu_count()} cores; relion_project is single-threaded; load average {os.getloadavg()[0]:.1f}")

        def simulate(folder, pad, workers):
            return lambda: write_dataset(volume, particles, work / folder, px, noise=None, ctf_pad_factor=pad,
                                         seed=seed, batch_size=batch, workers=workers, show_progress=False)

        warm_particles = particles.select(slice(0, min(n, 8)))
        t_warm, c_warm = _timed(lambda: [write_dataset(volume, warm_particles, work / f"warmup{pad}", px,
                                                       ctf_pad_factor=pad, show_progress=False) for pad in (1, 2)])
        print(f"cryolab one-time start-up (compiled kernels, 2 × 8 images): {t_warm:.2f} s wall, {c_warm:.2f} s CPU")

        cryolab_runs = {}
        for workers in worker_counts:
            cryolab_runs[workers] = _timed(simulate(f"cryolab_w{workers}", 1, workers))
        folder = work / f"cryolab_w{worker_counts[-1]}"
        for workers in worker_counts[:-1]:  # the output does not depend on the number of workers
            for a in sorted((work / f"cryolab_w{workers}").iterdir()):
                if a.read_bytes() != (folder / a.name).read_bytes():
                    print(f"WARNING: {a.name} differs between {workers} and {worker_counts[-1]} workers")

        t_relion, c_relion = _timed(lambda: subprocess.run(
            [relion, "--i", str(work / "map.mrc"), "--ang", "particles.star", "--o", "relion_proj", "--ctf",
             "--angpix", str(px)], cwd=folder, check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE))
        c_relion = _children_cpu()  # (the only child process)

        stacks = sorted(folder.glob("particles_*.mrcs"))
        ours = np.concatenate([mrcfile.mmap(p, permissive=True).data for p in stacks]).reshape(n, -1).astype(np.float64)
        with mrcfile.mmap(folder / "relion_proj.mrcs", permissive=True) as m:
            theirs = np.asarray(m.data, dtype=np.float64).reshape(n, -1)
        a = ours - ours.mean(1, keepdims=True)
        b = theirs - theirs.mean(1, keepdims=True)
        corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        scale = float(np.median(np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)))

        def label(workers):
            return f"{workers} worker{'s' if workers > 1 else ' '}"

        for workers, (t_cryolab, c_cryolab) in cryolab_runs.items():
            print(f"cryolab  (CTF on the box, {label(workers)}): {n / t_cryolab:8.1f} images/s wall "
                  f"({t_cryolab:.2f} s, incl. map and writing), {n / c_cryolab:8.1f} images per CPU-second")
        print(f"relion_project --ctf:                  {n / t_relion:8.1f} images/s wall ({t_relion:.2f} s, "
              f"incl. writing), {n / c_relion:8.1f} images per CPU-second")
        for workers, (t_cryolab, c_cryolab) in cryolab_runs.items():
            print(f"ratio cryolab ({label(workers)}) / RELION: {t_relion / t_cryolab:8.2f} (wall), "
                  f"{c_relion / c_cryolab:.2f} (per CPU-second)")
        print(f"per-image correlation: mean {corr.mean():.6f}, median {np.median(corr):.6f}, min {corr.min():.6f}; "
              f"RELION/cryolab amplitude ratio (median) {scale:.4f}")

        if not args.skip_padded:
            workers = worker_counts[-1]
            t_padded, c_padded = _timed(simulate("cryolab_padded", 2, workers))
            print(f"cryolab  (default CTF canvas 2×box, {label(workers)}): {n / t_padded:8.1f} images/s wall "
                  f"({t_padded:.2f} s), {n / c_padded:8.1f} images per CPU-second")
        if args.stages:
            _stage_breakdown(volume, particles, px, min(n, batch))
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
