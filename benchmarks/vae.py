"""Benchmark: cryolab train-vae against cryoDRGN train_vae on adenylate kinase (two states; open↔closed motion).

Data (made with ``cryolab simulate``, cached in the work folder): ``--n`` particles of the
built-in adenylate kinase at ``--box``² and ``--pixel-size``, uniform poses, CTF (defocus
1–2.5 µm), white noise at SNR ``--snr`` over the box, protein white.

- ``discrete``: the open (4AKE) and closed (1AKE) Coulomb potentials, half the particles each.
- ``continuous``: a trajectory between them, each particle the linear blend
  ``(1 − t) V_open + t V_closed`` at a latent ``t`` from a broad Gaussian (mean 0.5, σ 0.3,
  truncated to [0, 1]).

The runs of a data set (cryolab with each ``--pixel-fraction``, and cryoDRGN) run at the same
time, one thread each, so that they share whatever else loads the machine; their times are
comparable with each other, not with a quiet machine. Both programs get the same architecture (encoder and decoder ``--dim`` × ``--layers``, zdim
``--zdim``), batch size, poses and CTFs (cryoDRGN reads the pose/CTF pickles that
``cryolab.io`` writes from the STAR file; its default data inversion is kept, which with its CTF
sign convention gives maps of positive density from our white-protein images — with
``--uninvert-data`` its maps come out negated, checked on these data),
and the same number of CPU threads (``--threads``, via ``OMP_NUM_THREADS`` for cryoDRGN); each
other setting is its program's default. After each epoch the benchmark prints, for both:

  s/epoch      training time of the epoch (cryoDRGN: its own "Finished in"; cryolab: the same
               span, minibatch loop only), and the cumulative wall time including the pass that
               encodes all particles
  AUC          discrete: ROC AUC of the first principal component of z against the true state
               (max(a, 1 − a), the sign of a PC being arbitrary); continuous: against t ≥ 0.5
  kmeans       accuracy of k-means(2) on z against the state (best of the two labellings)
  corr         continuous: |Pearson r| between the first PC of z and the true t
  FSC-AUC      the decoder's map at the mean z of each true state (continuous: of the
               particles with t < 0.2 and t > 0.8, against the blend at their mean t) against
               the true map: area under the FSC curve up to Nyquist (1 = identical), averaged
  peak memory  maximum resident set size of each training process (os.wait4)

    python benchmarks/vae.py                       # 4000 particles, 20 epochs, both programs
    python benchmarks/vae.py --epochs 3 --datasets discrete
    python benchmarks/vae.py --epochs 5 --skip-cryodrgn

Measured on the shared 2-core development machine (28 Nov 2026; 1-minute load average 8–14
from other work during the run; ``python benchmarks/vae.py --epochs 3``, 4000 particles at 64²,
256×3, zdim 8, batch 16, one thread each; cryolab lr 5e-4, cryoDRGN 4.3.1 defaults):

  discrete     epoch 1 s (all concurrent)  AUC by epoch 1/2/3    FSC-AUC epoch 3  peak MB
  cryolab f=1        1841                  0.951 0.991 0.999        0.518          969
  cryolab f=0.5       899                  0.948 0.988 0.997        0.494          838
  cryoDRGN           2144                  0.874 0.977 0.996        0.393         1197
  continuous                               |r| with true t 1/2/3
  cryolab f=1        1805                  0.275 0.621 0.791        0.486          969
  cryolab f=0.5       943                  0.286 0.604 0.752        0.467          791
  cryoDRGN           1871                  0.360 0.600 0.729        0.400         1242

On the same machine when quiet (load ~2), one epoch of the first 800 discrete particles, run
one after the other twice: cryolab f=1 31.9/33.0 s, f=0.5 16.0/16.2 s, cryoDRGN 34.4/35.6 s
(its "Finished in"); whole commands 36.7, 20.8 and 45.7 s. Per epoch, evaluating every Fourier
point, the two programs are within ~10 % (both are bound by the same matrix products); the
factor 2 comes from ``pixel_fraction`` 0.5.

cryoDRGN is looked for at /work/peers/venv/bin/cryodrgn (``--cryodrgn``) and skipped with a
message when missing. The machine may be shared: the 1-minute load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CRYODRGN = "/work/peers/venv/bin/cryodrgn"
TRAJECTORY_LOW, TRAJECTORY_HIGH = 0.2, 0.8


# --------------------------------------------------------------------------------------------
# data and ground truth


def simulate(workdir: Path, name: str, args) -> Path:
    """particles.star of data set ``name`` in ``workdir/name`` (made once), with cryoDRGN pickles beside it."""
    from cryolab.cli import main as cryolab_main
    from cryolab.io import (read_star, table_to_cryodrgn_ctf, table_to_cryodrgn_poses, write_cryodrgn_ctf,
                            write_cryodrgn_poses)

    folder = workdir / name
    star = folder / "particles.star"
    if not star.is_file():
        common = ["-n", str(args.n), "--box", str(args.box), "--pixel-size", str(args.pixel_size), "--snr", str(args.snr),
                  "--states", "adk_open", "adk_closed", "-o", str(folder)]
        extra = (["--seed", "1"] if name == "discrete" else
                 ["--seed", "2", "--trajectory", "--interpolation", "linear", "--latent-means", "0.5", "--latent-sigmas", "0.3"])
        t0 = time.perf_counter()
        if cryolab_main(["simulate", *common, *extra]) != 0:
            raise SystemExit(f"cryolab simulate failed for {name}")
        print(f"  simulated {name}: {args.n} particles in {time.perf_counter() - t0:.0f} s")
    table = read_star(star)
    rot, trans = table_to_cryodrgn_poses(table)
    write_cryodrgn_poses(folder / "pose.pkl", rot, trans)
    write_cryodrgn_ctf(folder / "ctf.pkl", table_to_cryodrgn_ctf(table))
    return star


def truth(star: Path, args) -> dict:
    """True states/latents of the particles and the true maps (the simulator's potentials)."""
    import numpy as np

    from cryolab.atoms import atoms_to_potential, builtin_model
    from cryolab.io import read_star

    table = read_star(star)
    maps = [atoms_to_potential(builtin_model(n), args.box, args.pixel_size).numpy() for n in ("adk_open", "adk_closed")]
    out = {"state": table["cryolabState"].to_numpy(np.int64) - 1, "maps": maps}
    if "cryolabLatent" in table.columns:
        out["latent"] = table["cryolabLatent"].to_numpy(np.float64)
        out["state"] = (out["latent"] >= 0.5).astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------
# metrics


def latent_metrics(z, info: dict) -> dict:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import roc_auc_score

    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    centred = z - z.mean(0)
    pc1 = centred @ np.linalg.svd(centred, full_matrices=False)[2][0] if z.shape[1] > 1 else centred[:, 0]
    state = info["state"]
    auc = roc_auc_score(state, pc1)
    labels = KMeans(2, n_init=10, random_state=0).fit_predict(z)
    accuracy = max(np.mean(labels == state), np.mean(labels != state))
    out = {"auc": max(auc, 1 - auc), "kmeans": float(accuracy)}
    if "latent" in info:
        out["corr"] = abs(float(np.corrcoef(pc1, info["latent"])[0, 1]))
    return out


def reference_points(z, info: dict):
    """Latent points at which maps are compared with the truth, and the true maps there."""
    import numpy as np

    z = np.asarray(z).reshape(len(z), -1)
    open_map, closed_map = info["maps"]
    if "latent" not in info:
        return [z[info["state"] == s].mean(0) for s in (0, 1)], [open_map, closed_map]
    t = info["latent"]
    points, maps = [], []
    for sel in (t < TRAJECTORY_LOW, t > TRAJECTORY_HIGH):
        points.append(z[sel].mean(0))
        mean_t = t[sel].mean()
        maps.append((1 - mean_t) * open_map + mean_t * closed_map)
    return points, maps


def fsc_auc(volume, true_map) -> float:
    """Mean FSC over shells 1 … N/2: the area under the FSC curve up to Nyquist, in [−1, 1]."""
    from cryolab.validate.fsc import fsc

    curve = fsc(volume, true_map)
    n = true_map.shape[-1]
    return float(curve[1 : n // 2 + 1].mean())


# --------------------------------------------------------------------------------------------
# cryolab: a worker process (so its peak memory is its own)


def cryolab_worker(args) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cryolab.heterogeneity import HetModelConfig, ParticleData, generate_volumes, train_vae
    from cryolab.io import read_particles

    star = Path(args.worker_star)
    info = truth(star, args)
    particles = read_particles(star)
    data = ParticleData.from_particles(particles, preload=False)
    config = HetModelConfig(box_size=args.box, pixel_size_A=particles.pixel_size_A, zdim=args.zdim,
                            encoder_layers=args.layers, encoder_width=args.dim, decoder_layers=args.layers,
                            decoder_width=args.dim, downsample=args.downsample)
    clock = {"start": time.perf_counter(), "paused": 0.0}
    out = open(args.worker_out, "w")

    def on_epoch(stats, z_mu, z_logvar, model):
        pause = time.perf_counter()  # the metrics below are not training: their time is left out
        row = {"epoch": stats.epoch, "train_s": stats.seconds,
               "wall_s": pause - clock["start"] - clock["paused"], **latent_metrics(z_mu, info)}
        points, maps = reference_points(z_mu, info)
        volumes = generate_volumes(model, np.stack(points), box_size=args.box)
        row["fsc_auc"] = float(np.mean([fsc_auc(v, m) for v, m in zip(volumes.numpy(), maps)]))
        out.write(json.dumps(row) + "\n")
        out.flush()
        clock["paused"] += time.perf_counter() - pause

    train_vae(data, config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, beta=args.beta, seed=0,
              checkpoint_dir=Path(args.worker_out).with_suffix(".checkpoints"), on_epoch=on_epoch,
              pixel_fraction=args.pixel_fraction[0], show_progress=False)
    out.close()
    return 0


def start_cryolab(star: Path, workdir: Path, args, pixel_fraction: float) -> dict:
    tag = f"cryolab_{star.parent.name}_f{pixel_fraction:g}"
    rows_path = workdir / f"{tag}.jsonl"
    rows_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker-star", str(star), "--worker-out", str(rows_path), *_shared_argv(args),
           "--pixel-fraction", str(pixel_fraction)]
    job = _start(cmd, os.environ.copy(), workdir / f"{tag}.log")
    job["rows_path"] = rows_path
    return job


def finish_cryolab(job: dict) -> tuple[list, dict]:
    run = _finish(job)
    return _read_rows(job["rows_path"]), run


def _shared_argv(args) -> list:
    argv = ["--epochs", str(args.epochs), "--box", str(args.box), "--pixel-size", str(args.pixel_size),
            "--zdim", str(args.zdim), "--dim", str(args.dim), "--layers", str(args.layers),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--threads", str(args.threads)]
    if args.beta is not None:
        argv += ["--beta", str(args.beta)]
    if args.downsample:
        argv += ["--downsample", str(args.downsample)]
    return argv


def _read_rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _start(cmd, env, log_path) -> dict:
    """Start ``cmd`` with its output in ``log_path``."""
    log = open(log_path, "w")
    return {"proc": subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), "log": log, "cmd": cmd,
            "log_path": log_path, "started": time.time(), "t0": time.perf_counter()}


def _finish(job: dict) -> dict:
    """Wait for a job: its wall time, start time and peak memory (os.wait4: this process only)."""
    _, status, usage = os.wait4(job["proc"].pid, 0)
    job["log"].close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  command failed ({code}): {' '.join(map(str, job['cmd']))}; see {job['log_path']}")
    return {"wall_s": time.perf_counter() - job["t0"], "started": job["started"], "peak_rss_MB": usage.ru_maxrss / 1024,
            "returncode": code}


# --------------------------------------------------------------------------------------------
# cryoDRGN


def start_cryodrgn(star: Path, workdir: Path, args) -> dict:
    folder = star.parent
    outdir = workdir / f"cryodrgn_{folder.name}"
    if outdir.exists():
        shutil.rmtree(outdir)
    stacks = sorted(folder.glob("particles_*.mrcs"))
    if len(stacks) != 1:
        raise SystemExit(f"expected one particle stack in {folder}, found {len(stacks)} (use --n ≤ 10000)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [args.cryodrgn, "train_vae", str(stacks[0]), "--poses", str(folder / "pose.pkl"), "--ctf", str(folder / "ctf.pkl"),
           "--zdim", str(args.zdim), "-n", str(args.cryodrgn_epochs), "--enc-dim", str(args.dim), "--enc-layers", str(args.layers),
           "--dec-dim", str(args.dim), "--dec-layers", str(args.layers), "-b", str(args.batch_size),
           "--seed", "0", "--no-analysis", "-o", str(outdir)]
    if args.downsample:
        raise SystemExit("--downsample is not passed to cryoDRGN (it needs a downsampled stack); use --skip-cryodrgn")
    job = _start(cmd, env, workdir / f"cryodrgn_{folder.name}.log")
    job.update(outdir=outdir, env=env)
    return job


def finish_cryodrgn(job: dict, args, info: dict) -> tuple[list, dict]:
    import numpy as np

    from cryolab.io import RestrictedUnpickler, read_mrc

    run = _finish(job)
    outdir, env, log_path = job["outdir"], job["env"], job["log_path"]
    text = log_path.read_text() if log_path.is_file() else ""
    seconds = [_hms(m.group(2)) for m in re.finditer(r"Epoch: (\d+) Average gen loss.*Finished in ([0-9:.]+)", text)]
    rows = []
    start = run["started"]
    for epoch in range(1, len(seconds) + 1):
        zpath = outdir / f"z.{epoch}.pkl"
        if not zpath.is_file():
            break
        with open(zpath, "rb") as fh:
            z = np.asarray(RestrictedUnpickler(fh, path=zpath).load())
        wall = os.path.getmtime(zpath) - start
        row = {"epoch": epoch, "train_s": seconds[epoch - 1], "wall_s": wall, **latent_metrics(z, info)}
        points, maps = reference_points(z, info)
        zfile = outdir / f"zref.{epoch}.txt"
        np.savetxt(zfile, np.stack(points))
        voldir = outdir / f"vols.{epoch}"
        ok = subprocess.run([args.cryodrgn, "eval_vol", str(outdir / f"weights.{epoch}.pkl"), "-c", str(outdir / "config.yaml"),
                             "--zfile", str(zfile), "-o", str(voldir), "--Apix", str(args.pixel_size)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if ok:
            vols = [read_mrc(p).data for p in sorted(voldir.glob("*.mrc"))]
            row["fsc_auc"] = float(np.mean([fsc_auc(v, m) for v, m in zip(vols, maps)]))
            # cryoDRGN's maps may come out mirrored: say so if the mirror agrees better
            flipped = float(np.mean([fsc_auc(np.ascontiguousarray(v[::-1]), m) for v, m in zip(vols, maps)]))
            if flipped > row["fsc_auc"] + 0.05:
                row["fsc_auc_mirrored"] = flipped
        rows.append(row)
    return rows, run


def _hms(text: str) -> float:
    h, m, s = text.split(":")
    return 3600 * float(h) + 60 * float(m) + float(s)


# --------------------------------------------------------------------------------------------
# report


def print_rows(program: str, rows: list, run: dict) -> None:
    for r in rows:
        extra = f"  corr {r['corr']:.3f}" if "corr" in r else ""
        fsc_text = f"  FSC-AUC {r['fsc_auc']:.3f}" if "fsc_auc" in r else ""
        if "fsc_auc_mirrored" in r:
            fsc_text += f" (mirrored {r['fsc_auc_mirrored']:.3f})"
        print(f"  {program:8s}  epoch {r['epoch']:3d}  {r['train_s']:7.1f} s/epoch  wall {r['wall_s']:7.0f} s  "
              f"AUC {r['auc']:.3f}  kmeans {r['kmeans']:.3f}{extra}{fsc_text}", flush=True)
    print(f"  {program} total wall {run['wall_s']:.0f} s, peak memory {run['peak_rss_MB']:.0f} MB")


def first_reaching(rows: list, key: str, value: float):
    for r in rows:
        if r.get(key, -1) >= value:
            return r
    return None


def summary(name: str, ours: list, ours_run: dict, theirs: list | None, theirs_run: dict | None) -> None:
    """Speed and time to AUC ≥ 0.95. Epoch 1 is the fair speed comparison: all runs of a data set
    start together, while later epochs of runs of different speeds overlap less (and the load
    from other users changes)."""
    import numpy as np

    print(f"\n== summary: {name}")
    label = name.split(", ")[-1]
    hit = first_reaching(ours, "auc", 0.95)
    print(f"  {label}: epoch 1 {ours[0]['train_s']:.0f} s, median {np.median([r['train_s'] for r in ours]):.0f} s/epoch, "
          f"peak {ours_run['peak_rss_MB']:.0f} MB; "
          + (f"AUC ≥ 0.95 at epoch {hit['epoch']} after {hit['wall_s']:.0f} s" if hit else "AUC ≥ 0.95 not reached")
          if ours else f"  {label}: no epochs finished")
    if not (theirs and ours):
        return
    their_hit = first_reaching(theirs, "auc", 0.95)
    print(f"  cryoDRGN: epoch 1 {theirs[0]['train_s']:.0f} s, median {np.median([r['train_s'] for r in theirs]):.0f} s/epoch, "
          f"peak {theirs_run['peak_rss_MB']:.0f} MB; "
          + (f"AUC ≥ 0.95 at epoch {their_hit['epoch']} after {their_hit['wall_s']:.0f} s" if their_hit else
             f"AUC ≥ 0.95 not reached in {len(theirs)} epochs ({theirs[-1]['wall_s']:.0f} s; best AUC "
             f"{max(r['auc'] for r in theirs):.3f})"))
    print(f"  time per epoch, epoch 1 (concurrent): cryoDRGN / {label} = {theirs[0]['train_s'] / ours[0]['train_s']:.2f}")
    if hit:
        print(f"  {label}'s time to AUC ≥ 0.95 / cryoDRGN's wall time for its {len(theirs)} epochs = "
              f"{hit['wall_s'] / theirs[-1]['wall_s']:.2f}"
              + (f"; / cryoDRGN's time to AUC ≥ 0.95 = {hit['wall_s'] / their_hit['wall_s']:.2f}" if their_hit else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs for cryolab (default 20)")
    parser.add_argument("--cryodrgn-epochs", type=int, help="epochs for cryoDRGN (default: --epochs)")
    parser.add_argument("--n", type=int, default=4000, help="particles per data set (default 4000)")
    parser.add_argument("--box", type=int, default=64, help="box in pixels (default 64)")
    parser.add_argument("--pixel-size", type=float, default=1.6, help="pixel size in Å (default 1.6)")
    parser.add_argument("--snr", type=float, default=0.1, help="SNR over the box (default 0.1)")
    parser.add_argument("--zdim", type=int, default=8, help="latent dimension (default 8)")
    parser.add_argument("--dim", type=int, default=256, help="encoder and decoder width (default 256)")
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder residual layers (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="minibatch size for both (default 16)")
    parser.add_argument("--lr", type=float, default=5e-4, help="cryolab learning rate (default 5e-4; cryoDRGN keeps its 1e-4)")
    parser.add_argument("--beta", type=float, help="cryolab KL weight (default 1/zdim, as cryoDRGN's default)")
    parser.add_argument("--pixel-fraction", type=float, nargs="+", default=[1.0, 0.5],
                        help="cryolab: fraction of Fourier points per minibatch; one cryolab run per value (default 1 0.5)")
    parser.add_argument("--downsample", type=int, help="cryolab only: train at this box (with --skip-cryodrgn)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each program (default 1)")
    parser.add_argument("--datasets", nargs="+", choices=["discrete", "continuous"], default=["discrete", "continuous"])
    parser.add_argument("--skip-cryodrgn", action="store_true", help="run cryolab only")
    parser.add_argument("--cryodrgn", default=CRYODRGN, help=f"cryoDRGN executable (default {CRYODRGN})")
    parser.add_argument("--workdir", default="/tmp/cryolab-vae-bench", help="data and outputs (kept; data reused)")
    parser.add_argument("--worker-star", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cryodrgn_epochs = args.cryodrgn_epochs or args.epochs
    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    if args.worker_star:
        return cryolab_worker(args)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    have_drgn = not args.skip_cryodrgn and Path(args.cryodrgn).is_file()
    if not args.skip_cryodrgn and not have_drgn:
        print(f"cryoDRGN not found at {args.cryodrgn}: running cryolab only")
    print(f"cryolab train-vae vs cryoDRGN: {args.n} particles at {args.box}² ({args.pixel_size} Å/px), SNR {args.snr}, "
          f"zdim {args.zdim}, {args.dim}×{args.layers}, batch {args.batch_size}, {args.threads} thread(s) each; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in args.datasets:
        star = simulate(workdir, name, args)
        info = truth(star, args)
        print(f"\n== {name}")
        # all runs of a data set at once, so that they share whatever else loads the machine
        jobs = [("cryolab" if f == 1 else f"cryolab (pixel fraction {f:g})", start_cryolab(star, workdir, args, f))
                for f in args.pixel_fraction]
        drgn_job = start_cryodrgn(star, workdir, args) if have_drgn else None
        runs = []
        for label, job in jobs:
            ours, ours_run = finish_cryolab(job)
            print_rows(label, ours, ours_run)
            runs.append((label, ours, ours_run))
        theirs = theirs_run = None
        if drgn_job is not None:
            theirs, theirs_run = finish_cryodrgn(drgn_job, args, info)
            print_rows("cryoDRGN", theirs, theirs_run)
        for label, ours, ours_run in runs:
            summary(f"{name}, {label}", ours, ours_run, theirs, theirs_run)
        print(f"  (load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
