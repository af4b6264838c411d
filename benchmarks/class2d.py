"""Benchmark: 2D classification of simulated particles in known views, cryolab against RELION 3.1 (CPU).

Data: 2,000 particles of adenylate kinase (built-in 4AKE model, potential on a 64-pixel box at
1.6 Å/px) in 10 discrete viewing directions, chosen greedily among 60 directions spread over the
sphere so that their projections differ as much as possible at 12 Å (largest correlation between
two of them, over all in-plane angles, is printed). Each particle has a random in-plane angle, a
random origin within ±4 pixels, a CTF (defocus 1–2.5 µm) and white Gaussian noise at SNR 0.05
over the box (``cryolab.simulate``). The STAR file the programs see has no angles and no origins
(both start from zero), only images and CTFs; the truth is kept in ``truth.npz``.

Both programs run the same number of iterations with the same regularisation (T = 2), mask
(``--particle_diameter``) and sampling (``--psi_step``, ``--offset_range``, ``--offset_step``)::

    relion_refine --i particles.star --o rln/run --K 10 --iter 5 --tau2_fudge 2 --particle_diameter D
                  --psi_step S --offset_range R --offset_step s --ctf --j 2 --dont_combine_weights_via_disc
                  --pool 100 --zero_mask --flatten_solvent --random_seed 0

RELION's sampling rates are "before oversampling": with its default adaptive oversampling it
evaluates the most probable region again at half these steps. cryolab searches its grid
exhaustively, streaming the particles from the STAR/MRCS files, twice: at the nominal steps
("cryolab") and at half of them ("cryolab fine", RELION's final sampling everywhere).

Reported for each: CPU time (user + system) per iteration — ``resource.getrusage(RUSAGE_CHILDREN)``
around ``relion_refine`` (``--j 2``), ``time.process_time()`` around cryolab's ``run_em`` (one torch
thread by default: on a shared machine a second OpenMP thread mostly spin-waits, adding CPU time,
not speed) — including each program's initialisation spread over the iterations; the adjusted Rand index of the classes
against the true views; the fraction of particles whose in-plane angle is within one nominal step
of the truth (after removing each class's own rotation); and the resolution of each class average
against the noise-free, CTF-free projection of its majority view (FRC 0.5 after the best in-plane
rotation and shift; population-weighted mean over classes), plus each program's own estimate.

    python benchmarks/class2d.py                       # the full benchmark (needs relion_refine)
    python benchmarks/class2d.py --n 400 --iterations 2 --skip-relion   # a quick check of cryolab
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _fibonacci_directions(n: int):
    """(rot, tilt) in degrees of ``n`` directions spread evenly over the sphere."""
    i = np.arange(n) + 0.5
    tilt = np.degrees(np.arccos(1 - 2 * i / n))
    rot = (np.degrees(np.pi * (1 + 5**0.5) * i) % 360) - 180
    return np.stack([rot, tilt], axis=1)


def _choose_views(volume, pixel_size_A: float, n_views: int):
    """Greedy choice of views whose projections (12 Å) differ most under any in-plane rotation."""
    import torch

    from cryolab.classify2d import rotate_images
    from cryolab.fourier import apply_filter, lowpass_filter
    from cryolab.projection import project_fourier
    from cryolab.rotations import inplane_angles, relion_euler_to_matrix

    candidates = _fibonacci_directions(60)
    euler = torch.tensor(np.concatenate([candidates, np.zeros((len(candidates), 1))], axis=1), dtype=torch.float32)
    box = volume.shape[-1]
    proj = project_fourier(volume, relion_euler_to_matrix(euler))
    proj = apply_filter(proj, lowpass_filter((box, box), 1 / 12.0, pixel_size_A=pixel_size_A), ndim=2)
    proj = proj - proj.mean(dim=(-2, -1), keepdim=True)
    proj = proj / proj.norm(dim=(-2, -1), keepdim=True)
    rotated = rotate_images(proj[:, None], inplane_angles(5.0)[None])  # (V, R, N, N)
    sim = torch.einsum("ixy,jrxy->ijr", proj, rotated).amax(-1)
    sim = torch.maximum(sim, sim.T)
    chosen = [0]
    while len(chosen) < n_views:
        worst = sim[:, chosen].amax(dim=1)
        worst[chosen] = 2.0
        chosen.append(int(worst.argmin()))
    largest = float(max(sim[a, b] for a in chosen for b in chosen if a != b))
    return candidates[chosen], largest


def simulate(workdir: Path, n: int, n_views: int, box: int, pixel_size_A: float, snr: float, seed: int) -> dict:
    import torch

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import read_star, write_star
    from cryolab.simulate import GaussianNoise, ParticleParameters, sample_ctf_params, write_dataset

    volume = atoms_to_potential(builtin_model("adk_open"), box, pixel_size_A)
    views, largest = _choose_views(volume, pixel_size_A, n_views)
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(n_views, (n,), generator=g)
    psi = torch.rand(n, generator=g) * 360 - 180
    shifts = (torch.rand(n, 2, generator=g) * 2 - 1) * 4 * pixel_size_A
    ctf = sample_ctf_params(n, defocus_min_A=10000, defocus_max_A=25000, generator=g)
    euler = torch.cat([torch.tensor(views, dtype=torch.float32)[which], psi[:, None]], dim=1)
    result = write_dataset(volume, ParticleParameters(euler, shifts, ctf), workdir / "data", pixel_size_A,
                           noise=GaussianNoise(snr), seed=seed, show_progress=False, star_name="truth.star")
    table = read_star(result.star_path)
    blind = table.drop(columns=[c for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                                            "rlnOriginYAngst") if c in table.columns])
    blind.attrs = table.attrs
    write_star(workdir / "data" / "particles.star", blind)
    np.savez(workdir / "truth.npz", view=which.numpy(), psi=psi.numpy(), shifts_A=shifts.numpy(), views=views,
             names=np.asarray(table["rlnImageName"], dtype=str))
    return {"views": views.tolist(), "largest_view_correlation_12A": largest}


def run_relion(workdir: Path, args) -> dict:
    out = workdir / "rln"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = ["relion_refine", "--i", "particles.star", "--o", str(out / "run"), "--K", str(args.classes),
           "--iter", str(args.iterations), "--tau2_fudge", "2", "--particle_diameter", str(args.diameter),
           "--psi_step", str(args.psi_step), "--offset_range", str(args.offset_range_px),
           "--offset_step", str(args.offset_step_px), "--ctf", "--j", str(args.threads),
           "--dont_combine_weights_via_disc", "--pool", "100", "--zero_mask", "--flatten_solvent",
           "--random_seed", "0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir / "data", capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (workdir / "relion.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"relion_refine failed ({proc.returncode}); see {workdir / 'relion.log'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    info = {"command": " ".join(cmd), "cpu_s": cpu, "wall_s": wall}
    (workdir / "relion.json").write_text(json.dumps(info) + "\n")
    return info


def read_relion(workdir: Path, args, names) -> dict:
    import mrcfile
    import starfile

    it = f"{args.iterations:03d}"
    data = starfile.read(workdir / "rln" / f"run_it{it}_data.star")
    particles = data["particles"] if isinstance(data, dict) else data
    order = {name: i for i, name in enumerate(particles["rlnImageName"])}
    rows = [order[name] for name in names]
    classes = particles["rlnClassNumber"].to_numpy()[rows] - 1
    psi = particles["rlnAnglePsi"].to_numpy()[rows]
    with mrcfile.open(workdir / "rln" / f"run_it{it}_classes.mrcs") as mrc:
        averages = np.array(mrc.data, dtype=np.float32)
    model = starfile.read(workdir / "rln" / f"run_it{it}_model.star")
    own = model["model_classes"]["rlnEstimatedResolution"].to_numpy() if "model_classes" in model else None
    return {"classes": classes, "psi": psi, "averages": averages, "own_resolution_A": own}


def run_cryolab(workdir: Path, args, *, fine: bool = False) -> dict:
    import torch

    from cryolab.classify2d import Class2DSettings, batches_from_particles, run_em
    from cryolab.io import read_particles

    torch.set_num_threads(args.cryolab_threads)
    start_cpu, start = time.process_time(), time.perf_counter()
    cwd = os.getcwd()
    os.chdir(workdir / "data")  # RELION's rule: image paths relative to the project directory
    try:
        particles = read_particles("particles.star")
        px = particles.pixel_size_A
        refine = 2.0 if fine else 1.0  # RELION's oversampled (final) steps are half the nominal ones
        settings = Class2DSettings(
            n_classes=args.classes, box_size=particles.images.shape[-1], pixel_size_A=px,
            psi_step_deg=args.psi_step / refine, offset_range_A=args.offset_range_px * px,
            offset_step_A=args.offset_step_px * px / refine, tau2_fudge=2.0, mask_diameter_A=args.diameter)
        per_iteration = []
        marks = [time.process_time()]

        def record(rec):
            marks.append(time.process_time())
            per_iteration.append({"iteration": rec.iteration, "cpu_s": marks[-1] - marks[-2], "wall_s": rec.seconds,
                                  "resolution_A": rec.state.settings.box_size * px / max(rec.resolution_shell, 1)})

        result = run_em(batches_from_particles(particles, batch_size=args.batch_size), settings,
                        n_iterations=args.iterations, seed=0, callback=record, show_progress=False)
    finally:
        os.chdir(cwd)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    return {"cpu_s": cpu, "wall_s": wall, "per_iteration": per_iteration,
            "classes": result.assignments.class_index.numpy(), "psi": result.assignments.psi_deg.numpy(),
            "averages": result.state.references.numpy(), "own_resolution_A": result.state.class_resolution_A.numpy()}


def angle_accuracy(classes, psi_found, psi_true, step_deg: float) -> float:
    """Fraction of particles whose in-plane angle is within ``step_deg`` of the truth, after removing
    each class's own rotation (psi_true = psi_found + α_c)."""
    delta = np.radians(psi_true - psi_found)
    ok = np.zeros(len(classes), dtype=bool)
    for c in np.unique(classes):
        sel = classes == c
        alpha = math.atan2(np.sin(delta[sel]).mean(), np.cos(delta[sel]).mean())
        err = np.degrees(np.abs(np.arctan2(np.sin(delta[sel] - alpha), np.cos(delta[sel] - alpha))))
        ok[sel] = err <= step_deg
    return float(ok.mean())


def resolution_against_truth(averages, classes, views_true, view_directions, box, pixel_size_A, diameter_A):
    """Per class: FRC 0.5 resolution of the average against the clean projection of its majority view."""
    import torch

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.classify2d import rotate_images
    from cryolab.masks import spherical_mask
    from cryolab.projection import project_fourier
    from cryolab.rotations import inplane_angles, relion_euler_to_matrix
    from cryolab.validate import fsc, fsc_resolution_A

    volume = atoms_to_potential(builtin_model("adk_open"), box, pixel_size_A)
    euler = torch.tensor(np.concatenate([view_directions, np.zeros((len(view_directions), 1))], 1), dtype=torch.float32)
    truth = project_fourier(volume, relion_euler_to_matrix(euler))
    mask = spherical_mask(box, pixel_size_A, diameter_A / 2, soft_edge_A=5 * pixel_size_A, ndim=2)
    angles = inplane_angles(1.0)
    out = []
    for c in range(averages.shape[0]):
        members = views_true[classes == c]
        if len(members) < 0.01 * len(classes):
            continue
        view = int(np.bincount(members).argmax())
        avg = torch.as_tensor(averages[c]) * mask
        rotated = rotate_images(truth[view], angles)  # (R, N, N)
        # best rotation and (circular) shift by cross-correlation
        xc = torch.fft.irfft2(torch.fft.rfft2(avg)[None] * torch.fft.rfft2(rotated).conj(), s=(box, box))
        best = int(xc.flatten().argmax())
        r, dy, dx = best // (box * box), (best // box) % box, best % box
        aligned = torch.roll(rotated[r], shifts=(dy, dx), dims=(-2, -1)) * mask
        curve = fsc(aligned, avg, ndim=2)
        out.append((len(members), float(fsc_resolution_A(curve, box, pixel_size_A, 0.5))))
    weights = np.array([w for w, _ in out], dtype=float)
    res = np.array([r for _, r in out])
    finite = np.isfinite(res)
    return {"per_class_A": res.tolist(), "weighted_mean_A": float((weights[finite] * res[finite]).sum() / weights[finite].sum()),
            "median_A": float(np.median(res))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="particles (default 2000)")
    p.add_argument("--classes", type=int, default=10, help="classes = true views (default 10)")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--pixel-size", type=float, default=1.6)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--diameter", type=float, default=90.0, help="particle diameter (Å) for the masks")
    p.add_argument("--psi-step", type=float, default=10.0)
    p.add_argument("--offset-range-px", type=float, default=6.0)
    p.add_argument("--offset-step-px", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2, help="relion_refine --j (default 2)")
    p.add_argument("--cryolab-threads", type=int, default=1,
                   help="torch threads for cryolab (default 1: on a shared machine extra OpenMP threads spin-wait and "
                        "add CPU time without adding speed)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/cryolab-class2d-bench")
    p.add_argument("--skip-relion", action="store_true")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the simulated data and RELION's run (relion.json) in --workdir from an earlier run")
    args = p.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if args.reuse and (workdir / "simulation.json").exists():
        sim = json.loads((workdir / "simulation.json").read_text())
    else:
        sim = simulate(workdir, args.n, args.classes, args.box, args.pixel_size, args.snr, args.seed)
        (workdir / "simulation.json").write_text(json.dumps(sim) + "\n")
    print(f"simulated {args.n} particles in {args.classes} views ({time.perf_counter() - t:.0f} s); largest correlation "
          f"between two views at 12 Å: {sim['largest_view_correlation_12A']:.2f}", flush=True)
    truth = np.load(workdir / "truth.npz", allow_pickle=False)
    from sklearn.metrics import adjusted_rand_score

    results = {"settings": vars(args), "simulation": sim}
    runs = {}
    if not args.skip_relion:
        if shutil.which("relion_refine") is None:
            print("relion_refine not found; use --skip-relion", file=sys.stderr)
            return 1
        if args.reuse and (workdir / "relion.json").exists():
            info = json.loads((workdir / "relion.json").read_text())
        else:
            info = run_relion(workdir, args)
        info.update(read_relion(workdir, args, truth["names"]))
        runs["RELION 3.1"] = info
        print(f"RELION: {info['cpu_s']:.0f} s CPU, {info['wall_s']:.0f} s wall", flush=True)
    for fine in (False, True):
        name = "cryolab fine" if fine else "cryolab"
        info = run_cryolab(workdir, args, fine=fine)
        runs[name] = info
        print(f"{name}: {info['cpu_s']:.0f} s CPU, {info['wall_s']:.0f} s wall", flush=True)

    print(f"\n{args.n} particles, {args.classes} classes, {args.iterations} iterations, box {args.box} at {args.pixel_size} Å, "
          f"psi step {args.psi_step}°, offsets {args.offset_range_px}/{args.offset_step_px} px, RELION --j {args.threads}, "
          f"cryolab {args.cryolab_threads} thread(s)")
    print("cryolab: exhaustive at the nominal steps; cryolab fine: exhaustive at half the steps (RELION's oversampled steps)")
    print(f"{'program':<14}{'CPU s/iter':>12}{'wall s/iter':>12}{'ARI':>8}{'psi ok':>9}{'res. vs truth (Å)':>19}{'own est. (Å)':>14}")
    for name, info in runs.items():
        ari = adjusted_rand_score(truth["view"], info["classes"])
        acc = angle_accuracy(info["classes"], info["psi"], truth["psi"], args.psi_step)
        res = resolution_against_truth(info["averages"], info["classes"], truth["view"], truth["views"], args.box,
                                       args.pixel_size, args.diameter)
        own = np.asarray(info["own_resolution_A"], dtype=float)
        own_text = f"{np.median(own[np.isfinite(own)]):.1f}" if own is not None and np.isfinite(own).any() else "-"
        info.update(ari=ari, psi_within_step=acc, resolution_vs_truth=res,
                    cpu_per_iteration_s=info["cpu_s"] / args.iterations, wall_per_iteration_s=info["wall_s"] / args.iterations)
        print(f"{name:<14}{info['cpu_per_iteration_s']:>12.1f}{info['wall_per_iteration_s']:>12.1f}{ari:>8.3f}{acc:>9.2f}"
              f"{res['weighted_mean_A']:>19.1f}{own_text:>14}")
    if "RELION 3.1" in runs:
        r = runs["RELION 3.1"]
        for name in ("cryolab", "cryolab fine"):
            c = runs[name]
            print(f"RELION / {name} CPU time per iteration: {r['cpu_per_iteration_s'] / c['cpu_per_iteration_s']:.1f}x; "
                  f"ARI {r['ari']:.3f} vs {c['ari']:.3f}; resolution vs truth {r['resolution_vs_truth']['weighted_mean_A']:.1f} "
                  f"vs {c['resolution_vs_truth']['weighted_mean_A']:.1f} Å")
    for info in runs.values():
        for key in ("classes", "psi", "averages", "own_resolution_A"):
            info[key] = np.asarray(info[key]).tolist() if key != "averages" else None
    results["runs"] = runs
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
