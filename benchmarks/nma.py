"""Benchmark: ANM normal modes (20 slowest) with cryolab's sparse solver and with ProDy, against size.

Structures of about 200, 2,000, 10,000 and 50,000 residues: the real 4AKE Cα (214 residues,
from ../shared/data or the built-in adk_open) and assemblies of 9, 47 and 234 copies of it on a
cubic lattice (``cryolab.nma.replicate_on_lattice``). The lattice spacing is the structure's
extent plus a 3 Å gap, well under the 15 Å cutoff, so neighbouring copies share many contacts
and each assembly is one connected, rigid network with exactly six zero modes. (With a gap near
or above the cutoff the copies decouple and every copy adds six zero or near-zero modes, which
would make "the 20 slowest modes" mean rigid motions of copies; the benchmark checks
connectivity and the zero-mode count.)

Each engine × size runs in its own subprocess, timed from coordinates to modes (Hessian plus
eigensolver), and reports its peak resident memory increase (``resource`` ``ru_maxrss`` minus the
process's memory after imports) and the peak of Python/NumPy allocations (``tracemalloc``;
SuperLU's own allocations are not in it). ProDy builds a dense 3N × 3N Hessian (8·(3N)² bytes:
7.3 GB at 10,000 residues, 180 GB at 50,000) and diagonalises it with LAPACK; it is skipped where
twice that matrix would not fit in the available memory, and stopped after --prody-timeout
seconds. Modes are compared where both ran: largest relative eigenvalue difference and smallest
|overlap| between corresponding modes.

    python benchmarks/nma.py                       # 200, 2,000, 10,000, 50,000 residues
    python benchmarks/nma.py --sizes 200 2000      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESIDUES_PER_COPY = 214


def _ca_coords():
    import numpy as np

    from cryolab.atoms import builtin_model

    model = builtin_model("adk_open")
    return np.asarray(model.coords_A[(model.atom_names == "CA") & (model.elements == "C")])


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _worker(engine: str, copies: int, n_modes: int, outdir: str) -> None:
    """Run one engine on one assembly; print a JSON line and save the modes."""
    import resource
    import tracemalloc

    import numpy as np

    from cryolab.nma import anm_modes, replicate_on_lattice

    coords = replicate_on_lattice(_ca_coords(), copies, gap_A=3.0)
    if engine == "prody":
        import prody

        prody.confProDy(verbosity="none")
    base_kb = _rss_kb()
    tracemalloc.start()
    t0 = time.perf_counter()
    if engine == "cryolab":
        modes = anm_modes(coords, n_modes=n_modes, method="sparse")
        values, vectors, zeros = modes.eigenvalues.numpy(), modes.eigenvectors.numpy(), modes.n_zero_modes
    else:
        anm = prody.ANM("bench")
        anm.buildHessian(coords, cutoff=15.0, gamma=1.0)
        anm.calcModes(n_modes)
        values, vectors, zeros = anm.getEigvals(), anm.getEigvecs(), 6
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(Path(outdir) / f"{engine}_{copies}_values.npy", values)
    np.save(Path(outdir) / f"{engine}_{copies}_vectors.npy", vectors)
    print(json.dumps({"engine": engine, "residues": len(coords), "seconds": seconds,
                      "peak_rss_MB": peak_kb / 1024, "rss_increase_MB": (peak_kb - base_kb) / 1024,
                      "tracemalloc_MB": traced / 2**20, "zero_modes": zeros}))


def _available_MB() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _run(engine, copies, n_modes, outdir, timeout):
    cmd = [sys.executable, __file__, "--worker", engine, str(copies), "--modes", str(n_modes), "--outdir", outdir]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"stopped after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"engine": engine, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 10000, 50000],
                        help="approximate numbers of residues (copies of 4AKE's 214 Cα; default 200 2000 10000 50000)")
    parser.add_argument("--modes", type=int, default=20, help="non-zero modes (default 20)")
    parser.add_argument("--prody-timeout", type=float, default=1800.0, help="seconds before a ProDy run is stopped (default 1800)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a cryolab run is stopped (default 900)")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "COPIES"), help=argparse.SUPPRESS)
    parser.add_argument("--outdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("CRYOLAB_PROGRESS", "0")
    if args.worker:
        _worker(args.worker[0], int(args.worker[1]), args.modes, args.outdir)
        return 0

    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory(prefix="cryolab-nma-bench-") as tmp:
        for size in args.sizes:
            copies = max(1, round(size / RESIDUES_PER_COPY))
            n = copies * RESIDUES_PER_COPY
            print(f"--- {n} residues ({copies} cop{'y' if copies == 1 else 'ies'} of 4AKE Cα), {3 * n} degrees of freedom",
                  flush=True)
            ours = _run("cryolab", copies, args.modes, tmp, args.timeout)
            dense_MB = 8 * (3 * n) ** 2 / 2**20
            if 2 * dense_MB > 0.9 * _available_MB():
                theirs = {"engine": "prody", "error": f"skipped: dense Hessian {dense_MB / 1024:.1f} GB, twice that "
                                                       f"exceeds available memory ({_available_MB() / 1024:.1f} GB)"}
            else:
                theirs = _run("prody", copies, args.modes, tmp, args.prody_timeout)
            row = {"residues": n, "cryolab": ours, "prody": theirs}
            if "error" not in ours and "error" not in theirs:
                a_val = np.load(Path(tmp) / f"cryolab_{copies}_values.npy")
                b_val = np.load(Path(tmp) / f"prody_{copies}_values.npy")
                a_vec = np.load(Path(tmp) / f"cryolab_{copies}_vectors.npy")
                b_vec = np.load(Path(tmp) / f"prody_{copies}_vectors.npy")
                row["max_rel_eigenvalue_diff"] = float(np.max(np.abs(a_val - b_val) / b_val))
                row["min_overlap"] = float(np.abs((a_vec * b_vec).sum(0)).min())
                row["min_subspace_overlap"] = float(np.sqrt(((a_vec.T @ b_vec) ** 2).sum(1)).min())
                row["speedup"] = theirs["seconds"] / ours["seconds"]
                row["memory_ratio"] = theirs["rss_increase_MB"] / max(ours["rss_increase_MB"], 1.0)
            rows.append(row)
            for name in ("cryolab", "prody"):
                r = row[name]
                if "error" in r:
                    print(f"  {name:8s} {r['error']}")
                else:
                    print(f"  {name:8s} {r['seconds']:9.2f} s   peak RSS {r['peak_rss_MB']:8.0f} MB "
                          f"(+{r['rss_increase_MB']:.0f} MB)   tracemalloc {r['tracemalloc_MB']:8.0f} MB   "
                          f"zero modes {r['zero_modes']}")
            if "speedup" in row:
                print(f"  ProDy / cryolab: time × {row['speedup']:.1f}, memory × {row['memory_ratio']:.1f}; "
                      f"eigenvalues agree to {row['max_rel_eigenvalue_diff']:.1e} (relative), "
                      f"min |overlap| {row['min_overlap']:.6f}, min subspace overlap {row['min_subspace_overlap']:.6f}",
                      flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
