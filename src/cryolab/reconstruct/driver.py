"""Reconstruction of a particle set: half sets, streamed back-projection, regularised maps, FSC.

:func:`reconstruct_from_particles` is the short driver over the two visible steps
(:func:`~cryolab.reconstruct.backproject_chunk` per chunk of images read with
``ImageStack.iter_chunks``, then :func:`reconstruct_halves`), so its peak memory is one pair of
padded grids and one chunk of images per worker thread (at least two pairs: one per half set)
plus the maps being finalised, whatever the number of particles. Threads (``workers``, by default
one per core) each back-project a contiguous block of one half set into their own grids — the
compiled back-projection and the FFTs release the GIL — and the blocks of a half are added at the
end; the maps are then finalised side by side.

Gold-standard half maps (Scheres & Chen 2012): particles are split by ``rlnRandomSubset`` (1 or 2)
or, where the table has none, alternately (rows 0, 2, 4, … in half 1); each half is reconstructed
on its own and their FSC (``cryolab.validate.fsc``) measures the resolution. The full map
combines both halves' grids before the division.

Regularisation (:mod:`cryolab.reconstruct.finalize`):

- ``"ssnr-from-halves"`` (default): RELION's refinement recipe. Half maps are first made with the
  small constant ``wiener_constant``; their FSC gives ``SSNR = F / (1 − F)`` per shell (``F'`` =
  ``sqrt(2F / (1 + F))`` for the full map), and the maps are then remade as ``data / (weight +
  W̄ / (T · SSNR))``. Shells without signal are damped, so noise does not blow up where the CTF
  has zeros or the sampling is sparse.
- ``"wiener"``: constant ``1 / SSNR = wiener_constant`` for all shells.
- ``"relion"``: ``relion_reconstruct``'s default (iterative gridding weights, no regulariser),
  for comparison.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from cryolab._progress import progress
from cryolab.errors import InputError
from cryolab.reconstruct.backproject import PartialReconstruction, _single_threaded, backproject_chunk
from cryolab.reconstruct.finalize import DEFAULT_WIENER_CONSTANT, finalize, ssnr_from_fsc

__all__ = ["REGULARISATIONS", "Reconstruction", "default_workers", "half_set_assignment", "reconstruct_halves",
           "reconstruct_from_particles"]

REGULARISATIONS = ("ssnr-from-halves", "wiener", "relion")


@dataclass(frozen=True)
class Reconstruction:
    """A reconstructed map, its half maps and their FSC.

    Attributes
    ----------
    volume
        float32 ``(N, N, N)`` map from all particles, centred at ``N//2``.
    half1, half2
        float32 ``(N, N, N)`` maps of the two half sets, regularised the same way.
    pixel_size_A
        Voxel size in Å.
    fsc
        float32 ``(N//2 + 1,)`` FSC between ``half1`` and ``half2`` (shells ``round(|k| N)``).
    ssnr
        The per-shell SSNR used for the full map (``"ssnr-from-halves"``), else None.
    n_particles
        Particles in half 1 and half 2.
    regularisation
        How the maps were regularised (:data:`REGULARISATIONS`).
    """

    volume: torch.Tensor
    half1: torch.Tensor
    half2: torch.Tensor
    pixel_size_A: float
    fsc: torch.Tensor
    ssnr: torch.Tensor | None
    n_particles: tuple[int, int]
    regularisation: str


def half_set_assignment(table) -> np.ndarray:
    """Half set (1 or 2) of every particle: ``rlnRandomSubset``, or alternating rows without it.

    Raises InputError where ``rlnRandomSubset`` holds values other than 1 and 2.
    """
    n = len(table)
    if "rlnRandomSubset" in getattr(table, "columns", ()):
        subset = np.asarray(table["rlnRandomSubset"])
        try:
            subset = subset.astype(np.int64)
        except (TypeError, ValueError):
            raise InputError("rlnRandomSubset is not numeric", table.attrs.get("cryolab_source")) from None
        bad = ~np.isin(subset, (1, 2))
        if bad.any():
            raise InputError(f"rlnRandomSubset must be 1 or 2, found {sorted(set(subset[bad].tolist()))[:5]}",
                             table.attrs.get("cryolab_source"))
        return subset
    return (np.arange(n) % 2 + 1).astype(np.int64)


def reconstruct_halves(half1: PartialReconstruction, half2: PartialReconstruction, *, pixel_size_A: float,
                       regularisation: str = "ssnr-from-halves", wiener_constant: float = DEFAULT_WIENER_CONSTANT,
                       tau2_fudge: float = 1.0, relion_iterations: int = 10, workers: int = 1) -> Reconstruction:
    """Half maps, full map and half-map FSC from the back-projected grids of two half sets.

    Parameters
    ----------
    half1, half2
        Back-projected grids of the two half sets (same box, padding and interpolation). Their
        margins are folded (:meth:`PartialReconstruction.folded`); they represent the same grids
        afterwards.
    pixel_size_A
        Voxel size in Å (recorded in the result).
    regularisation
        ``"ssnr-from-halves"``, ``"wiener"`` or ``"relion"`` (module docstring).
    wiener_constant
        ``1 / SSNR`` for ``"wiener"``, and for the first pass of ``"ssnr-from-halves"``.
    tau2_fudge
        RELION's ``T`` multiplying the FSC-derived SSNR.
    relion_iterations
        Gridding iterations for ``"relion"``.
    workers
        Threads finalising maps side by side (each single-threaded; the FFTs release the GIL).
    """
    return _reconstruct_halves(half1, half2, pixel_size_A=pixel_size_A, regularisation=regularisation,
                               wiener_constant=wiener_constant, tau2_fudge=tau2_fudge,
                               relion_iterations=relion_iterations, workers=workers, consume=False)


def _reconstruct_halves(half1, half2, *, pixel_size_A, regularisation, wiener_constant, tau2_fudge, relion_iterations,
                        workers, consume: bool) -> Reconstruction:
    """:func:`reconstruct_halves`; with ``consume``, the full map's grids are ``half2`` added into
    ``half1`` once the half maps are done (``half1`` is changed), instead of a third pair of grids —
    with fewer than 3 workers the full map waits for a free thread anyway."""
    from cryolab.validate import fsc

    if regularisation not in REGULARISATIONS:
        raise InputError(f"regularisation must be one of {REGULARISATIONS}, got {regularisation!r}")
    if half1.n_images == 0 or half2.n_images == 0:
        raise InputError(f"both half sets need particles (got {half1.n_images} and {half2.n_images})")
    consume = consume and workers < 3
    if regularisation == "relion":
        options = {"method": "relion", "relion_iterations": relion_iterations}
        options_half = options_full = options
    elif regularisation == "wiener":
        options_half = options_full = {"wiener_constant": wiener_constant}
    ssnr_full = None
    with _single_threaded(), _pool(workers) as pool:
        def run(jobs):
            if pool is None:
                return [finalize(p, **kw) for p, kw in jobs]
            return [f.result() for f in [pool.submit(finalize, p, **kw) for p, kw in jobs]]

        if regularisation == "ssnr-from-halves":
            first = fsc(*run([(p, {"wiener_constant": wiener_constant}) for p in (half1, half2)]))
            ssnr_half = ssnr_from_fsc(first, tau2_fudge=tau2_fudge)
            ssnr_full = ssnr_from_fsc(first, whole_map=True, tau2_fudge=tau2_fudge)
            options_half, options_full = {"ssnr": ssnr_half}, {"ssnr": ssnr_full}
        n_particles = (half1.n_images, half2.n_images)
        if consume:
            maps = run([(half1, options_half), (half2, options_half)])
            maps += run([(_accumulate(half1, half2), options_full)])
        else:
            maps = run([(half1, options_half), (half2, options_half), (half1 + half2, options_full)])
        half_map_fsc = fsc(maps[0], maps[1])
    return Reconstruction(volume=maps[2], half1=maps[0], half2=maps[1], pixel_size_A=float(pixel_size_A),
                          fsc=half_map_fsc, ssnr=ssnr_full, n_particles=n_particles, regularisation=regularisation)


def _pool(workers: int):
    """A thread pool of ``workers`` threads, or None (run in the caller's thread) for one."""
    if int(workers) != workers or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers}")
    return ThreadPoolExecutor(max_workers=int(workers)) if workers > 1 else nullcontext(None)


def _ctf_for(table, use_ctf: bool | None):
    """CTF parameters of all particles (or None) and whether the images are CTF-premultiplied."""
    from cryolab.ctf import CTFParams

    has_ctf = all(c in table.columns for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"))
    if use_ctf is None:
        use_ctf = has_ctf
    if not use_ctf:
        return None, False
    if not has_ctf:
        raise InputError("CTF correction asked for, but the particles have no rlnDefocusU/V/Angle",
                         table.attrs.get("cryolab_source"))
    try:
        params = CTFParams.from_table(table)
    except InputError as exc:
        raise InputError(exc.problem, table.attrs.get("cryolab_source")) from None
    premultiplied = False
    if "rlnCtfDataAreCtfPremultiplied" in table.columns:
        flags = np.unique(np.asarray(table["rlnCtfDataAreCtfPremultiplied"]).astype(np.int64))
        if len(flags) > 1:
            raise InputError("particles mix CTF-premultiplied and plain images (rlnCtfDataAreCtfPremultiplied)",
                             table.attrs.get("cryolab_source"))
        premultiplied = bool(flags[0]) if len(flags) else False
    return params, premultiplied


def default_workers() -> int:
    """Threads :func:`reconstruct_from_particles` uses by default: the CPU cores this process may
    run on, at most 4 (each thread holds one pair of grids, ~12 · P³/2 bytes: 105 MB for a box of
    128, 800 MB for 256)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _streams(halves: np.ndarray, workers: int) -> list[tuple[int, np.ndarray]]:
    """``(half, positions)`` work streams: one per half set for one worker (run in turn), else
    ``workers`` contiguous blocks of about equal size, each within one half set (the halves get
    workers in proportion to their particles, at least one each)."""
    sets = {h: np.flatnonzero(halves == h) for h in (1, 2)}
    if workers == 1 or not (len(sets[1]) and len(sets[2])):
        counts = {1: 1, 2: 1} if workers == 1 else {h: workers if len(sets[h]) else 0 for h in (1, 2)}
    else:
        first = min(max(1, round(workers * len(sets[1]) / len(halves))), workers - 1)
        counts = {1: first, 2: workers - first}
    return [(h, block) for h in (1, 2) if counts[h] for block in np.array_split(sets[h], counts[h]) if len(block)]


def reconstruct_from_particles(
    particles,
    *,
    chunk_size: int = 256,
    pad_factor: float = 2,
    interpolation: str = "linear",
    symmetry="C1",
    regularisation: str = "ssnr-from-halves",
    wiener_constant: float = DEFAULT_WIENER_CONSTANT,
    tau2_fudge: float = 1.0,
    relion_iterations: int = 10,
    use_ctf: bool | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> Reconstruction:
    """Reconstruct a particle set's map and half maps, streaming its images in chunks.

    Parameters
    ----------
    particles
        :class:`cryolab.io.ParticleSet` (``cryolab.io.read_particles``): poses
        (``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/YAngst``), CTF columns, optional
        ``rlnRandomSubset``, lazy images and pixel size.
    chunk_size
        Images read and back-projected at a time by each thread; sets the memory used, not the
        result.
    pad_factor, interpolation, symmetry
        As :func:`backproject_chunk`.
    regularisation, wiener_constant, tau2_fudge, relion_iterations
        As :func:`reconstruct_halves`.
    use_ctf
        True: CTF-correct (error without CTF columns); False: ignore the CTF; None (default):
        correct when the table has CTF parameters. ``rlnCtfDataAreCtfPremultiplied = 1`` is
        honoured.
    workers
        Threads (default :func:`default_workers`: the CPU cores, at most 4). Each back-projects
        its own contiguous block of one half set, read through its own memory maps, into its own
        grids (the map-reduce structure across cores; the blocks of a half are added at the end),
        and the maps are then finalised side by side. Every thread runs torch single-threaded.
        The result does not depend on the number of workers beyond float rounding.
    show_progress
        Progress bar with ETA on stderr.

    Returns
    -------
    Reconstruction

    Raises
    ------
    InputError
        Missing poses, non-square images, a bad ``rlnRandomSubset``, an empty half set.
    """
    from cryolab.io import poses_from_table

    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise InputError(f"chunk size must be a positive integer, got {chunk_size}")
    workers = default_workers() if workers is None else workers
    if int(workers) != workers or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers}")
    workers = int(workers)
    table, images = particles.table, particles.images
    source = table.attrs.get("cryolab_source")
    n, ny, nx = images.shape
    if n != len(table):
        raise InputError(f"{n} images for {len(table)} particles", source)
    if n == 0:
        raise InputError("no particles", source)
    if ny != nx:
        raise InputError(f"images must be square, got {nx}x{ny}", source)
    rotations, shifts_A = poses_from_table(table)
    ctf, premultiplied = _ctf_for(table, use_ctf)
    halves = half_set_assignment(table)
    pixel_size_A = float(particles.pixel_size_A)
    bar = progress(total=n, desc="back-project", unit="img", enabled=show_progress)
    lock = threading.Lock()

    def backproject_stream(positions: np.ndarray) -> PartialReconstruction:
        partial = PartialReconstruction.zeros(nx, pad_factor=pad_factor, interpolation=interpolation)
        stack = images.subset(positions)  # its own memory maps: threads never share one
        try:
            for local, chunk in stack.iter_chunks(int(chunk_size)):
                rows = torch.from_numpy(positions[local])
                partial = backproject_chunk(torch.from_numpy(chunk), rotations[rows], shifts_A[rows],
                                            None if ctf is None else ctf[rows], pixel_size_A=pixel_size_A,
                                            symmetry=symmetry, ctf_premultiplied=premultiplied, out=partial)
                stack.close()  # unmap what was read: mapped pages would count as resident memory
                with lock:
                    bar.update(len(local))
        finally:
            stack.close()
        return partial

    streams = _streams(halves, workers)
    try:
        with _single_threaded(), _pool(min(workers, len(streams))) as pool:
            if pool is None:
                done = [backproject_stream(positions) for _, positions in streams]
            else:
                futures = [pool.submit(backproject_stream, positions) for _, positions in streams]
                done = [f.result() for f in futures]
    finally:
        bar.close()
    partials = {}
    for (h, _), partial in zip(streams, done):
        partials[h] = partial if h not in partials else _accumulate(partials[h], partial)
    for h in (1, 2):
        partials.setdefault(h, PartialReconstruction.zeros(nx, pad_factor=pad_factor, interpolation=interpolation))
    return _reconstruct_halves(partials[1], partials[2], pixel_size_A=pixel_size_A, regularisation=regularisation,
                               wiener_constant=wiener_constant, tau2_fudge=tau2_fudge,
                               relion_iterations=relion_iterations, workers=workers, consume=True)


def _accumulate(total: PartialReconstruction, other: PartialReconstruction) -> PartialReconstruction:
    """``total + other``, adding into ``total``'s grids (no new pair of grids)."""
    total.data.add_(other.data)
    total.weight.add_(other.weight)
    return PartialReconstruction(total.data, total.weight, total.box_size, total.pad_factor, total.interpolation,
                                 total.n_images + other.n_images)
