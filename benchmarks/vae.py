"""Benchmark: cryolab train-vae against cryoDRGN train_vae on adenylate kinase (two states; open↔closed motion).

Data (made with ``cryolab simulate``, cached in the work folder): ``--n`` particles of the
built-in adenylate kinase at ``--box``² and ``--pixel-size``, uniform poses, CTF (defocus
1–2.5 µm), white noise at SNR ``--snr`` over the box, protein white.

- ``discrete``: the open (4AKE) and closed (1AKE) Coulomb potentials, half the particles each.
- ``continuous``: a trajectory between them, each particle the linear blend
  ``(1 − t) V_open + t V_closed`` at a latent ``t`` from a broad Gaussian (mean 0.5, σ 0.3,
  truncated to [0, 1]).

The runs of a data set (cryolab with each ``--pixel-fraction``, and cryoDRGN) run at the same
time, one thread each, so that they share whatever else loads the machine; their wall times
are comparable with each other, not with a quiet machine, and their CPU times do not depend on
the sharing. Both programs get the same architecture (encoder and decoder ``--dim`` ×
``--layers``, zdim ``--zdim``), batch size, seed, poses and CTFs (cryoDRGN reads the pose/CTF
pickles that ``cryolab.io`` writes from the STAR file; its default data inversion is kept,
which with its CTF sign convention gives maps of positive density from our white-protein
images — with ``--uninvert-data`` its maps come out negated, checked on these data), and the
same number of CPU threads (``--threads``, via ``OMP_NUM_THREADS`` for cryoDRGN); each other
setting is its program's default. After each epoch the benchmark prints, for both:

  s/epoch      training time of the epoch (cryoDRGN: its own "Finished in"; cryolab: the same
               span, minibatch loop only)
  wall, cpu    wall time and CPU time (user + system) from the start of the process to the end
               of the epoch: imports, reading the data and the pass that encodes all particles
               after each epoch included, the benchmark's own metrics (true maps, FSC, k-means)
               left out; cryoDRGN's at the moment its z.N.pkl appears (CPU time read from /proc,
               polled every second)
  AUC          discrete: ROC AUC of the first principal component of z against the true state
               (max(a, 1 − a), the sign of a PC being arbitrary); continuous: against t ≥ 0.5
  kmeans       accuracy of k-means(2) on z against the state (best of the two labellings)
  corr         continuous: |Pearson r| between the first PC of z and the true t
  FSC-AUC      the decoder's map at the mean z of each true state (continuous: of the
               particles with t < 0.2 and t > 0.8, against the blend at their mean t) against
               the true map: area under the FSC curve up to Nyquist (1 = identical), averaged
  peak memory  maximum resident set size of each training process (os.wait4)

and a summary: time per epoch, time to AUC ≥ 0.95 (discrete) and to cryoDRGN's best |r|
(continuous), each against cryoDRGN's.

    python benchmarks/vae.py                       # 4000 particles, 20 epochs, both programs
    python benchmarks/vae.py --epochs 3 --datasets discrete
    python benchmarks/vae.py --epochs 5 --skip-cryodrgn

Measured on the shared 2-core development machine, 28 Nov 2026 (``python benchmarks/vae.py
--epochs 3``: 4000 particles at 64², 256×3, zdim 8, batch 16, seed 0, one thread each, the
three runs of a data set at once; 1-minute load average 1.8 before, 2.1–3.0 during the run,
these processes included; cryolab defaults: lr 1e-3, Adam β₂ 0.99, pixel fraction f = 0.25 with the lowest
frequencies always drawn; cryoDRGN 4.3.1 defaults). Wall / CPU seconds at the end of each epoch:

  discrete        epoch 1 s/epoch  wall s 1/2/3     CPU s 1/2/3     AUC 1/2/3          FSC-AUC 3  peak MB
  cryolab f=1           187        192  325  494    140  273  415   0.965 0.994 0.999    0.525      897
  cryolab f=0.25         62         67  119  171     42   76  109   0.957 0.993 0.998    0.439      897
  cryoDRGN              233        248  409  594    181  341  500   0.874 0.977 0.996    0.393     1239
  continuous                                                        |r| with true t
  cryolab f=1           242        251  431  609    138  279  418   0.276 0.701 0.809    0.491      930
  cryolab f=0.25        109        118  171  224     41   74  106   0.285 0.676 0.791    0.426      953
  cryoDRGN              289        314  541  745    201  366  550   0.360 0.600 0.729    0.400     1229

Time to AUC ≥ 0.95 (discrete): cryolab f = 0.25 after epoch 1, 67 s wall (42 s CPU); cryoDRGN
after epoch 2, 409 s (341 s): 0.16 of cryoDRGN's wall time (0.12 of its CPU time); f = 1:
0.47 (0.41). With seeds 1 and 2 (``--seed``, cryolab f = 0.25 and cryoDRGN only, load ~1):
cryolab AUC 0.965 / 0.947 after epoch 1, 0.994 / 0.993 after epoch 2, cryoDRGN 0.896 / 0.881
then 0.983 / 0.970; time to AUC ≥ 0.95 63 s vs 423 s (0.15; CPU 0.12) and 75 s vs 365 s (0.20;
CPU 0.21: cryolab needed two epochs). Continuous: AUC ≥ 0.95 in neither; cryoDRGN's best |r|
(0.729, epoch 3, 745 s) was passed by cryolab f = 0.25 at epoch 3 after 224 s (0.30 of the wall
time, 0.19 of the CPU time). Time per epoch: from the CPU times, an epoch of f = 0.25 cost 32–34 s
and of f = 1 133–142 s against cryoDRGN's 159–184 s (5.1× and 1.2× less on average); in wall time epoch 1,
run concurrently, 3.8× and 1.25× (discrete) and 2.7× and 1.2× (continuous, whose first epoch met
a burst of other work: 109 s wall for 41 s CPU); on the quiet machine (seed 2) 37 s against
180 s (4.8×). Per epoch at f = 1 the two programs do the same work (they were within ~10 %
before cryolab evaluated its decoder in cache-sized chunks of points,
``cryolab.heterogeneity.model.CHUNK_ROWS``).

Earlier the same day (f = 0.5 drawn uniformly, lr 5e-4, Adam β₂ 0.999, no chunks; load 8–14)
cryolab f = 0.5 reached AUC 0.948 / 0.988 / 0.997 and |r| 0.286 / 0.604 / 0.752: the state
separation of one epoch now takes half the decoder evaluations.

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
    # wall times are read against the moment the parent started this process, as for cryoDRGN
    # (imports and reading included); the benchmark's own work (true maps, metrics) is left out
    clock = {"paused": 0.0, "paused_cpu": 0.0}
    pause, pause_cpu = time.time(), time.process_time()
    info = truth(star, args)
    clock["paused"] += time.time() - pause
    clock["paused_cpu"] += time.process_time() - pause_cpu
    particles = read_particles(star)
    data = ParticleData.from_particles(particles, preload=False)
    config = HetModelConfig(box_size=args.box, pixel_size_A=particles.pixel_size_A, zdim=args.zdim,
                            encoder_layers=args.layers, encoder_width=args.dim, decoder_layers=args.layers,
                            decoder_width=args.dim, downsample=args.downsample)
    out = open(args.worker_out, "w")

    def on_epoch(stats, z_mu, z_logvar, model):
        pause, pause_cpu = time.time(), time.process_time()
        row = {"epoch": stats.epoch, "train_s": stats.seconds, "end_time": pause - clock["paused"],
               "cpu_s": pause_cpu - clock["paused_cpu"], **latent_metrics(z_mu, info)}
        points, maps = reference_points(z_mu, info)
        volumes = generate_volumes(model, np.stack(points), box_size=args.box)
        row["fsc_auc"] = float(np.mean([fsc_auc(v, m) for v, m in zip(volumes.numpy(), maps)]))
        out.write(json.dumps(row) + "\n")
        out.flush()
        clock["paused"] += time.time() - pause
        clock["paused_cpu"] += time.process_time() - pause_cpu

    options = {} if args.lr is None else {"lr": args.lr}
    train_vae(data, config, epochs=args.epochs, batch_size=args.batch_size, beta=args.beta, seed=args.seed, **options,
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
    run = wait_for(job)
    rows = _read_rows(job["rows_path"])
    for row in rows:
        row["wall_s"] = row.pop("end_time") - run["started"]
    return rows, run


def _shared_argv(args) -> list:
    argv = ["--epochs", str(args.epochs), "--box", str(args.box), "--pixel-size", str(args.pixel_size),
            "--zdim", str(args.zdim), "--dim", str(args.dim), "--layers", str(args.layers),
            "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.lr is not None:
        argv += ["--lr", str(args.lr)]
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


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (and its waited-for children), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields 3 … of proc(5)
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def poll(job: dict) -> bool:
    """Whether the job has ended (then its run statistics are in ``job["run"]``); never blocks.

    While cryoDRGN runs, the CPU time it has used is read when each epoch's ``z.N.pkl`` appears
    (``job["epoch_cpu_s"]``; polled every second or so).
    """
    if "run" in job:
        return True
    if "outdir" in job:
        cpu = job.setdefault("epoch_cpu_s", [])
        if (job["outdir"] / f"z.{len(cpu) + 1}.pkl").is_file():
            seconds = _cpu_seconds(job["proc"].pid)
            if seconds is not None:
                cpu.append(seconds)
    pid, status, usage = os.wait4(job["proc"].pid, os.WNOHANG)
    if pid == 0:
        return False
    job["log"].close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  command failed ({code}): {' '.join(map(str, job['cmd']))}; see {job['log_path']}")
    job["run"] = {"wall_s": time.perf_counter() - job["t0"], "started": job["started"],
                  "peak_rss_MB": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime, "returncode": code}
    return True


def wait_for(job: dict) -> dict:
    """Wait for a job: its wall time, start time, CPU time and peak memory (os.wait4: this process only)."""
    while not poll(job):
        time.sleep(1.0)
    return job["run"]


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
           "--seed", str(args.seed), "--no-analysis", "-o", str(outdir)]
    if args.downsample:
        raise SystemExit("--downsample is not passed to cryoDRGN (it needs a downsampled stack); use --skip-cryodrgn")
    job = _start(cmd, env, workdir / f"cryodrgn_{folder.name}.log")
    job.update(outdir=outdir, env=env)
    return job


def finish_cryodrgn(job: dict, args, info: dict) -> tuple[list, dict]:
    import numpy as np

    from cryolab.io import RestrictedUnpickler, read_mrc

    run = wait_for(job)
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
        if epoch <= len(job.get("epoch_cpu_s", [])):
            row["cpu_s"] = job["epoch_cpu_s"][epoch - 1]
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
        cpu = f"  cpu {r['cpu_s']:6.0f} s" if "cpu_s" in r else ""
        print(f"  {program:8s}  epoch {r['epoch']:3d}  {r['train_s']:7.1f} s/epoch  wall {r['wall_s']:7.0f} s{cpu}  "
              f"AUC {r['auc']:.3f}  kmeans {r['kmeans']:.3f}{extra}{fsc_text}", flush=True)
    print(f"  {program} total wall {run['wall_s']:.0f} s, CPU {run['cpu_s']:.0f} s, peak memory {run['peak_rss_MB']:.0f} MB")


def first_reaching(rows: list, key: str, value: float):
    for r in rows:
        if r.get(key, -1) >= value:
            return r
    return None


def summary(name: str, ours: list, ours_run: dict, theirs: list | None, theirs_run: dict | None) -> None:
    """Speed and time to AUC ≥ 0.95, in wall time and in CPU time.

    Epoch 1 is the fair wall-time comparison of speed: all runs of a data set start together,
    while later epochs of runs of different speeds overlap less (a run that finishes early
    leaves the cores to the others) and the load from other users changes. CPU seconds (each
    program runs one thread) do not depend on how the cores were shared.
    """
    import numpy as np

    print(f"\n== summary: {name}")
    label = name.split(", ")[-1]
    if not ours:
        print(f"  {label}: no epochs finished")
        return
    hit = first_reaching(ours, "auc", 0.95)
    print(f"  {label}: epoch 1 {ours[0]['train_s']:.0f} s, median {np.median([r['train_s'] for r in ours]):.0f} s/epoch, "
          f"peak {ours_run['peak_rss_MB']:.0f} MB; "
          + (f"AUC ≥ 0.95 at epoch {hit['epoch']} after {hit['wall_s']:.0f} s wall, {hit['cpu_s']:.0f} s CPU" if hit
             else "AUC ≥ 0.95 not reached"))
    if not theirs:
        return
    their_hit = first_reaching(theirs, "auc", 0.95)
    print(f"  cryoDRGN: epoch 1 {theirs[0]['train_s']:.0f} s, median {np.median([r['train_s'] for r in theirs]):.0f} s/epoch, "
          f"peak {theirs_run['peak_rss_MB']:.0f} MB; "
          + (f"AUC ≥ 0.95 at epoch {their_hit['epoch']} after {their_hit['wall_s']:.0f} s wall"
             + (f", {their_hit['cpu_s']:.0f} s CPU" if "cpu_s" in their_hit else "") if their_hit else
             f"AUC ≥ 0.95 not reached in {len(theirs)} epochs ({theirs[-1]['wall_s']:.0f} s; best AUC "
             f"{max(r['auc'] for r in theirs):.3f})"))
    print(f"  time per epoch, epoch 1 (concurrent): cryoDRGN / {label} = {theirs[0]['train_s'] / ours[0]['train_s']:.2f}")
    if hit and their_hit:
        cpu = (f", in CPU time {hit['cpu_s'] / their_hit['cpu_s']:.2f}" if "cpu_s" in their_hit else "")
        print(f"  {label}'s time to AUC ≥ 0.95 / cryoDRGN's: wall {hit['wall_s'] / their_hit['wall_s']:.2f}{cpu}")
    elif hit:
        print(f"  {label}'s time to AUC ≥ 0.95 / cryoDRGN's wall time for its {len(theirs)} epochs = "
              f"{hit['wall_s'] / theirs[-1]['wall_s']:.2f}")
    if "corr" in theirs[0] and "corr" in ours[0]:
        best = max(theirs, key=lambda r: r["corr"])
        ours_hit = first_reaching(ours, "corr", best["corr"])
        print(f"  |r| with the true coordinate: cryoDRGN's best {best['corr']:.3f} (epoch {best['epoch']}, "
              f"{best['wall_s']:.0f} s wall); {label} "
              + (f"reached it at epoch {ours_hit['epoch']}, {ours_hit['wall_s']:.0f} s wall: ratio "
                 f"{ours_hit['wall_s'] / best['wall_s']:.2f}"
                 + (f", in CPU time {ours_hit['cpu_s'] / best['cpu_s']:.2f}" if "cpu_s" in best else "")
                 if ours_hit else f"did not (best {max(r['corr'] for r in ours):.3f})"))


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
    parser.add_argument("--lr", type=float, help="cryolab learning rate (default: train_vae's; cryoDRGN keeps its 1e-4)")
    parser.add_argument("--beta", type=float, help="cryolab KL weight (default 1/zdim, as cryoDRGN's default)")
    parser.add_argument("--pixel-fraction", type=float, nargs="+", default=[1.0, 0.25],
                        help="cryolab: fraction of Fourier points per minibatch; one cryolab run per value (default 1 0.25)")
    parser.add_argument("--downsample", type=int, help="cryolab only: train at this box (with --skip-cryodrgn)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each program (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both programs (default 0)")
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
        every = [job for _, job in jobs] + ([drgn_job] if drgn_job else [])
        while not all([poll(job) for job in every]):  # a list: poll them all each time (cryoDRGN's CPU per epoch)
            time.sleep(1.0)
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
