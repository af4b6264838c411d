"""Simulated particle data sets: the forward model in chunks, streamed to MRCS stacks and a STAR file.

The image of particle ``i`` is formed in four steps (docs/conventions.md for every convention):

1. **Projection** of its map (or the blend of two maps on a trajectory,
   :mod:`cryolab.simulate.states`) at pose ``A_i`` with the Fourier-slice projector
   (:func:`cryolab.projection.extract_central_slices_rfft`, RELION's), on the ``N × N`` box.
2. **Shift and CTF on a padded canvas** (:func:`~cryolab.simulate.ctf_sampling.apply_ctf_padded`):
   pad to ``pad_factor · N``, apply ``exp(2πi k·origin)`` and the CTF, crop back to ``N × N``.
   Protein stays white (projection of positive density times the CTF, RELION's convention).
3. **Noise** (:mod:`cryolab.simulate.noise`): white Gaussian at a target SNR, or electron
   counting at a dose with a detector model, or none.
4. **Output**, normalised so that the noise has standard deviation 1 (Gaussian: images divided
   by σ; counting: ``(λ₀ − N)/√λ₀``); noise-free data keep the projection's units.

Reproducibility. All per-particle parameters are drawn up front (:class:`ParticleParameters`,
small: a few numbers per particle) from generators seeded by :func:`generator_for` with the
master seed and a stream name, so that changing one option (say the shift range) leaves the
other draws unchanged. The noise of particle ``i`` comes from its own generator seeded by
``(seed, i)`` (:func:`particle_seeds`). The Gaussian noise level is calibrated on the first
``min(n, 256)`` particles. Clean images are always computed in blocks of :func:`block_size`
particles (a function of the box size only) aligned at multiples of it (FFT libraries round differently for different batch
shapes: without the blocks, batch sizes 33 and 100 differed in the last bit), so the output is a
function of the seed and the parameters only — the batch size changes neither the noise nor the
images (tests/test_simulate_dataset.py checks bit-identical files). Within a block, shift, CTF and
inverse FFT run in chunks of :func:`fft_chunk_size` images (also a function of the box only), and
the central slices of a whole batch come from one sweep of the projector (each slice value is
its own interpolation, whatever the batch). Every torch operation of the simulation runs on one
thread (the maps' lookup tables included: multi-threaded FFTs round differently), so the number
of worker threads does not change the output either.

Streaming and parallelism. Images are computed ``batch_size`` at a time (default
:func:`default_batch_size`: the projector's sweep gets cheaper per image with larger batches, up
to 1024) by ``workers`` threads (default: one per available core; the numba kernels and torch
release the GIL), each batch on one thread, with its image buffers and canvas arrays reused from
batch to batch (fresh 10-100 MB arrays cost a page fault per 4 KiB). The calling thread writes
the batches in order into MRCS stacks of at most ``stack_size`` images each
(``particles_00001.mrcs``, …; directly to the disk where the file system allows, see
``_StackWriter``), with header statistics accumulated per image, while the workers compute the
next ones; at most two batches per worker and the one being written are in memory, never the
whole data set. Every file is written under a temporary name and renamed when complete; the STAR
file, written while the maps' tables are prepared, is renamed last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.errors import InputError
from cryolab.io import write_star
from cryolab.projection import extract_central_slices_rfft, prepare_volume_for_projection
from cryolab.rotations import relion_euler_to_matrix
from cryolab.simulate._compiled import modulate_rfft, stack_statistics
from cryolab.simulate._buffers import PAGE, mapped_empty, scratch
from cryolab.simulate.ctf_sampling import apply_ctf_padded, separable_phase_ramp
from cryolab.simulate.noise import (GaussianNoise, PoissonNoise, gaussian_noise_sigma,
                                    poisson_noise, signal_mask)
from cryolab.simulate.states import MapAssignment, single_map

#: Optics written to the STAR file when the particles carry no CTF parameters.
DEFAULT_OPTICS = {"rlnVoltage": 300.0, "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1}

#: Number of leading particles whose clean images calibrate the Gaussian noise level.
CALIBRATION_COUNT = 256

#: Clean images are computed in blocks of particles aligned at multiples of the block size, so that
#: every image comes out of the same batched FFTs whatever the batch size. The block holds about
#: this many image pixels (a power of two between 8 and 256 images; it depends on the box only).
BLOCK_PIXELS = 1 << 22

#: Pixels per FFT batch inside a block (:func:`fft_chunk_size`).
FFT_CHUNK_PIXELS = 1 << 19

#: CTF values are computed for groups of FFT chunks of about this many pixels (fewer calls).
CTF_GROUP_PIXELS = 1 << 21

#: Image pixels per batch of :func:`write_dataset` by default (:func:`default_batch_size`).
BATCH_PIXELS = 1 << 24

#: Largest default batch: the projector's sweep group (``cryolab.projection``).
MAX_DEFAULT_BATCH = 1024


def block_size(box_size: int) -> int:
    """Particles per computation block for images of ``box_size`` pixels (see :data:`BLOCK_PIXELS`)."""
    b = max(1, BLOCK_PIXELS // (box_size * box_size))
    return int(min(256, max(8, 1 << (b.bit_length() - 1))))

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------------------------
# Seeds


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014), vectorised over uint64 arrays."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _stream_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def particle_seeds(seed: int, indices, *, stream: str = "noise") -> np.ndarray:
    """63-bit seeds of particles ``indices`` for ``stream``, a pure function of ``(seed, stream, i)``."""
    base = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = _splitmix64(base ^ np.uint64(_stream_id(stream)))
    idx = np.asarray(indices, dtype=np.uint64)
    return (_splitmix64(base ^ _splitmix64(idx)) >> np.uint64(1)).astype(np.int64)


def generator_for(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one named random stream of the master ``seed``."""
    g = torch.Generator()
    g.manual_seed(int(particle_seeds(seed, [0], stream=stream)[0]))
    return g


# --------------------------------------------------------------------------------------------
# Per-particle parameters


@dataclass(frozen=True)
class ParticleParameters:
    """Ground truth of ``n`` simulated particles.

    Attributes
    ----------
    euler_deg
        ``(n, 3)`` RELION ``(rot, tilt, psi)`` in degrees.
    shifts_A
        ``(n, 2)`` origins ``(x, y)`` in Å (``rlnOriginXAngst/YAngst``); None means zeros.
    ctf
        CTF parameters with batch shape ``(n,)`` (defocus offsets already included), or None.
    maps
        Which map(s) form each particle (:class:`~cryolab.simulate.states.MapAssignment`); None
        means map 0 for all.
    micrograph_xy_A
        ``(n, 2)`` positions on a (tilted) micrograph in Å from its centre, or None.
    defocus_offset_A
        ``(n,)`` defocus added by the stage tilt (Å), or None.
    """

    euler_deg: torch.Tensor
    shifts_A: torch.Tensor
    ctf: CTFParams | None = None
    maps: MapAssignment | None = None
    micrograph_xy_A: torch.Tensor | None = None
    defocus_offset_A: torch.Tensor | None = None

    def __post_init__(self):
        euler = as_tensor(self.euler_deg, dtype=torch.float32).reshape(-1, 3)
        n = euler.shape[0]
        object.__setattr__(self, "euler_deg", euler)
        shifts = torch.zeros(n, 2) if self.shifts_A is None else as_tensor(self.shifts_A, dtype=torch.float32).reshape(-1, 2)
        object.__setattr__(self, "shifts_A", shifts)
        if self.maps is None:
            object.__setattr__(self, "maps", single_map(n))
        sizes = {"shifts_A": shifts.shape[0], "maps": self.maps.map_indices.shape[0]}
        if self.ctf is not None:
            sizes["ctf"] = int(self.ctf.batch_shape.numel()) if len(self.ctf.batch_shape) else n
        for name in ("micrograph_xy_A", "defocus_offset_A"):
            if getattr(self, name) is not None:
                sizes[name] = getattr(self, name).shape[0]
        wrong = {k: v for k, v in sizes.items() if v != n}
        if wrong:
            raise InputError(f"particle parameters disagree in length: {n} poses but {wrong}")

    def __len__(self) -> int:
        return self.euler_deg.shape[0]

    def select(self, index) -> "ParticleParameters":
        """The particles at ``index`` (a slice or index tensor)."""
        maps = MapAssignment(self.maps.map_indices[index], self.maps.map_weights[index], self.maps.state[index],
                             None if self.maps.latent is None else self.maps.latent[index])
        opt = {k: None if getattr(self, k) is None else getattr(self, k)[index]
               for k in ("micrograph_xy_A", "defocus_offset_A")}
        ctf = None
        if self.ctf is not None:
            ctf = self.ctf if len(self.ctf.batch_shape) == 0 else self.ctf[index]
        return ParticleParameters(self.euler_deg[index], self.shifts_A[index], ctf, maps, **opt)


# --------------------------------------------------------------------------------------------
# Clean images and noise


def prepare_maps(volumes, *, pad_factor: float = 2, executor=None) -> torch.Tensor:
    """Central-slice lookup tables ``(M, P, P, P//2 + 1)`` of ``M`` cubic maps of one size.

    See :func:`cryolab.projection.prepare_volume_for_projection` (``pad_factor`` oversamples
    the 3D transform; 2 as RELION). Computed on one thread, whatever torch's setting: FFTs on
    several threads round differently, and the simulated images must depend on the seed only;
    ``executor`` (e.g. :func:`write_dataset`'s workers) takes half of each map's transforms, a
    split that does not change the values.
    """
    vols = [as_tensor(v, dtype=torch.float32) for v in (volumes if isinstance(volumes, (list, tuple)) else [volumes])]
    shapes = {tuple(v.shape) for v in vols}
    if len(shapes) != 1:
        raise InputError(f"all maps must have the same shape, got {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) == 4:
        vols = list(vols[0])
        shape = shape[1:]
    if len(shape) != 3 or len(set(shape)) != 1:
        raise InputError(f"maps must be cubic (N, N, N), got shape {shape}")
    with _single_threaded():  # multi-threaded FFTs round differently: the tables must not depend on threads
        tables = [prepare_volume_for_projection(v, pad_factor=pad_factor, executor=executor) for v in vols]
    return tables[0][None] if len(tables) == 1 else torch.stack(tables)  # (no copy of a single table)


def clean_images(tables: torch.Tensor, particles: ParticleParameters, box_size: int, pixel_size_A: float, *,
                 ctf_pad_factor: float = 2) -> torch.Tensor:
    """Noise-free images ``(n, N, N)`` of ``particles``: projection, then shift and CTF on a padded canvas.

    Parameters
    ----------
    tables
        ``(M, P, P, P//2 + 1)`` from :func:`prepare_maps`.
    particles
        The particles to image; ``particles.maps`` indexes ``tables``.
    box_size, pixel_size_A
        Image size ``N`` and pixel size (Å) — the maps' voxel size.
    ctf_pad_factor
        Canvas for shift and CTF (:func:`~cryolab.simulate.ctf_sampling.apply_ctf_padded`). With 1
        the shift and the CTF multiply the central slices directly: the result is then
        :func:`cryolab.projection.project_fourier` with ``shifts_A`` and ``ctf``.
    """
    rot = relion_euler_to_matrix(particles.euler_deg)
    with _single_threaded():
        return _images_from_slices(_central_slices(tables, particles, rot, box_size), particles, box_size,
                                   pixel_size_A, ctf_pad_factor)


@contextlib.contextmanager
def _single_threaded():
    """Run torch on one thread: the projector's sweep is serial, and the FFTs and element-wise
    ops on chunks of a few dozen images lose far more to thread synchronisation than they gain —
    on a busy 2-core machine two torch threads made the simulation 4× slower in wall time and CPU
    time (benchmarks/simulate.py). Parallelism is one level up: :func:`write_dataset` computes
    whole batches on worker threads (each single-threaded), which share nothing but the table."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fft_chunk_size(box_size: int) -> int:
    """Images per FFT batch (a power of two dividing :func:`block_size`, a function of the box only).

    Shift, CTF and inverse FFT run on chunks of about :data:`FFT_CHUNK_PIXELS` pixels: their
    temporaries then stay in cache (and in the allocator's free lists) instead of costing a trip to
    memory and fresh pages for every block."""
    b = max(1, FFT_CHUNK_PIXELS // (box_size * box_size))
    return int(min(block_size(box_size), 1 << (b.bit_length() - 1)))


def default_batch_size(box_size: int) -> int:
    """Images per batch by default: about :data:`BATCH_PIXELS` pixels, at most
    :data:`MAX_DEFAULT_BATCH` images (1024 at 128²), whole blocks.

    The projector sweeps its table once per batch (in memory order, so that each part of it is
    read once for all the batch's images): larger batches make each image cheaper, up to the
    sweep's own group of 1024 images; memory grows with it (4 N² bytes per image and buffer,
    twice with Gaussian noise, for two batches per worker and one being written, and
    8 N (N/2 + 1) bytes per image for the central slices of each worker's batch)."""
    b = max(1, min(MAX_DEFAULT_BATCH, BATCH_PIXELS // (box_size * box_size)))
    block = block_size(box_size)
    return -(-b // block) * block


def batch_bounds(n: int, batch_size: int, block: int, workers: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batches of ``n`` particles: ``batch_size`` (a multiple of ``block``)
    each; with several workers, at most ``remaining / (2 · workers)`` (in whole blocks) towards
    the end, so that the workers finish together (guided scheduling)."""
    bounds, lo = [], 0
    while lo < n:
        size = batch_size
        if workers > 1:
            share = -(-(n - lo) // (2 * workers))  # ceil(remaining / 2 workers)
            size = min(batch_size, max(block, -(-share // block) * block))
        bounds.append((lo, min(lo + size, n)))
        lo += size
    return bounds


def default_workers() -> int:
    """Worker threads by default: the CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _images_from_slices(slices: torch.Tensor, particles: ParticleParameters, box_size: int, pixel_size_A: float,
                        ctf_pad_factor: float, *, out: torch.Tensor | None = None, workspace=None) -> torch.Tensor:
    """Real images from central slices: shift and CTF in Fourier space, or on a padded canvas.

    ``slices`` (contiguous) are modified in place. Everything but the FFTs is element-wise, so
    only the FFTs need the fixed chunks of :func:`fft_chunk_size`; the CTF values are computed for
    groups of a few chunks (fewer calls, still in cache)."""
    n = slices.shape[0]
    images = torch.empty(n, box_size, box_size) if out is None else out
    chunk = fft_chunk_size(box_size)
    shape = (box_size, box_size)
    ctf = particles.ctf
    per_particle_ctf = ctf is not None and len(ctf.batch_shape) > 0 and ctf.batch_shape[0] > 1
    shifts = particles.shifts_A
    has_shifts = bool((shifts != 0).any())
    # irfft_centered = fftshift ∘ irfftn; the recentring is a translation by N//2 pixels, folded
    # into the phase ramp (one pass with the shift and the CTF instead of a copy of the images).
    recentre_px = torch.full((n, 2), float(box_size // 2))
    canvas = max(box_size, int(round(ctf_pad_factor * box_size))) > box_size
    if canvas:  # recentre here; shift and CTF on the canvas
        ramp_y, ramp_x = separable_phase_ramp(-recentre_px, shape)
    else:  # no canvas: shift, recentring and CTF on the central slices
        ramp_y, ramp_x = separable_phase_ramp(shifts / pixel_size_A - recentre_px, shape)
    group = chunk * max(1, CTF_GROUP_PIXELS // (chunk * box_size * box_size))
    for g_lo in range(0, n, group):
        g_hi = min(g_lo + group, n)
        values = None
        if ctf is not None and not canvas:
            values = ctf_2d(ctf[g_lo:g_hi] if per_particle_ctf else ctf, shape, pixel_size_A, rfft=True)
            values = values.reshape(-1, box_size, box_size // 2 + 1)
        for lo in range(g_lo, g_hi, chunk):
            hi = min(lo + chunk, g_hi)
            part = slices[lo:hi]
            c_values = None if values is None else (values if values.shape[0] == 1 else values[lo - g_lo:hi - g_lo])
            modulate_rfft(part, ramp=(ramp_y[lo:hi], ramp_x[lo:hi]), ctf=c_values)
            if not canvas:
                torch.fft.irfft2(part, s=shape, out=images[lo:hi])
                continue
            centred = torch.fft.irfft2(part, s=shape, out=scratch(workspace, "centred", (hi - lo, *shape),
                                                                   torch.float32))
            apply_ctf_padded(centred, ctf[lo:hi] if per_particle_ctf else ctf, pixel_size_A, pad_factor=ctf_pad_factor,
                             shifts_A=shifts[lo:hi] if has_shifts else None, out=images[lo:hi], workspace=workspace)
    return images


def _central_slices(tables: torch.Tensor, particles: ParticleParameters, rot: torch.Tensor,
                    box_size: int, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Central slices ``(n, N, N//2 + 1)`` of the particles' maps (weighted sums for blends),
    written into ``out`` when given (a reused buffer)."""
    idx, w = particles.maps.map_indices, particles.maps.map_weights
    used = torch.unique(idx[w != 0]).tolist()
    for m in used:
        if not 0 <= m < tables.shape[0]:
            raise InputError(f"particle refers to map {m} but only {tables.shape[0]} map(s) were given")
    if len(used) == 1 and bool(((w * (idx == used[0])).sum(dim=-1) == 1).all()):  # one map, unit weights
        return extract_central_slices_rfft(tables[used[0]], rot, (box_size, box_size), out=out)
    slices = torch.zeros(len(particles), box_size, box_size // 2 + 1, dtype=torch.complex64) if out is None \
        else out.zero_()
    for m in used:
        weight = (w * (idx == m)).sum(dim=-1)
        sel = torch.nonzero(weight != 0).squeeze(-1)
        part = extract_central_slices_rfft(tables[m], rot[sel], (box_size, box_size))
        slices[sel] += weight[sel, None, None].to(torch.complex64) * part
    return slices


def _clean_images_blocked(tables, particles: ParticleParameters, start: int, stop: int, box_size: int,
                          pixel_size_A: float, ctf_pad_factor: float, *, workspace=None,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """Clean images of particles ``start … stop − 1`` computed in aligned blocks of :func:`block_size`.

    ``start`` must be a multiple of the block size. FFT libraries may round differently for
    different batch shapes; computing every image in the same block makes the output independent
    of how the caller batches. ``workspace`` (any object, e.g. a ``threading.local``) keeps the
    slice buffer from one call to the next; ``out`` receives the images when given.
    """
    block = block_size(box_size)
    if start < stop and start % block:
        raise ValueError(f"start {start} is not a multiple of the block size {block}")
    if start >= stop:
        return torch.zeros(0, box_size, box_size) if out is None else out
    # The projector's values do not depend on the batch (each is its own interpolation), so all
    # slices come from one sweep over the table; the FFTs run in chunks aligned with the blocks.
    part = particles.select(slice(start, stop))
    buffer = None  # with a workspace, one slice buffer per worker, reused: no fresh pages per batch
    if workspace is not None:
        buffer = scratch(workspace, "slices", (stop - start, box_size, box_size // 2 + 1), torch.complex64)
    with _single_threaded():
        slices = _central_slices(tables, part, relion_euler_to_matrix(part.euler_deg), box_size, out=buffer)
        return _images_from_slices(slices, part, box_size, pixel_size_A, ctf_pad_factor, out=out, workspace=workspace)


def add_noise(clean, noise, first_index: int, *, seed: int, pixel_size_A: float,
              sigma: float | None = None, out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of particles ``first_index, first_index + 1, …`` and the clean images on their scale.

    Each particle's noise is drawn from its own generator (:func:`particle_seeds`), so the result
    does not depend on how particles are batched.

    Parameters
    ----------
    clean
        ``(b, N, N)`` clean images (:func:`clean_images`).
    noise
        :class:`GaussianNoise` (needs ``sigma``, the calibrated noise level), :class:`PoissonNoise`
        or None.
    out
        Optional ``(clean_out, noisy)`` float32 tensors of ``clean``'s shape to write into (Gaussian
        noise; ``clean_out`` may be ``clean`` itself), so that a caller can reuse buffers.

    Returns
    -------
    (clean_out, noisy)
        Gaussian: ``clean / σ`` and ``clean / σ + n``; counting: see
        :func:`~cryolab.simulate.noise.poisson_noise`; None: ``clean`` twice.
    """
    clean = as_tensor(clean, dtype=torch.float32)
    if noise is None:
        return clean, clean
    seeds = particle_seeds(seed, np.arange(first_index, first_index + clean.shape[0]))
    g = torch.Generator()
    if isinstance(noise, GaussianNoise):
        if sigma is None or not sigma > 0:
            raise InputError("Gaussian noise needs a positive calibrated sigma")
        if out is None:
            scaled, noisy = clean / sigma, torch.empty_like(clean)
        else:
            scaled, noisy = torch.div(clean, sigma, out=out[0]), out[1]
        for j, s in enumerate(seeds.tolist()):  # add_gaussian_noise(scaled[j], 1.0), without temporaries
            g.manual_seed(s)
            torch.randn(scaled.shape[1:], generator=g, out=noisy[j])
            noisy[j] += scaled[j]
        return scaled, noisy
    if isinstance(noise, PoissonNoise):
        outs_clean, outs_noisy = [], []
        for j, s in enumerate(seeds.tolist()):
            g.manual_seed(s)
            c, y = poisson_noise(clean[j], noise, pixel_size_A, generator=g)
            outs_clean.append(c)
            outs_noisy.append(y)
        return torch.stack(outs_clean), torch.stack(outs_noisy)
    raise InputError(f"unknown noise model {noise!r}")


def calibrate_gaussian_sigma(tables, particles: ParticleParameters, noise: GaussianNoise, box_size: int,
                             pixel_size_A: float, *, ctf_pad_factor: float = 2) -> tuple[float, torch.Tensor]:
    """The data set's noise σ: ``sqrt(mean var_mask(clean) / SNR)`` over the first ``min(n, 256)`` particles.

    Returns σ and those clean images (reused for the first particles of the data set).
    """
    mask = signal_mask(box_size, pixel_size_A, radius_A=noise.mask_radius_A)
    count = min(len(particles), CALIBRATION_COUNT)
    images = _clean_images_blocked(tables, particles, 0, count, box_size, pixel_size_A, ctf_pad_factor)
    return gaussian_noise_sigma(images, noise.snr, mask=mask), images


def simulate_images(volumes, particles: ParticleParameters, pixel_size_A: float, *, noise=None, seed: int = 0,
                    ctf_pad_factor: float = 2, projection_pad_factor: float = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """In-memory simulation of a small set: ``(clean, noisy)``, each ``(n, N, N)`` float32.

    The same images as :func:`write_dataset` writes for the same arguments (see there).
    """
    tables = prepare_maps(volumes, pad_factor=projection_pad_factor)
    box = _box_of(volumes)
    sigma, clean = None, torch.zeros(0, box, box)
    if isinstance(noise, GaussianNoise):
        sigma, clean = calibrate_gaussian_sigma(tables, particles, noise, box, pixel_size_A, ctf_pad_factor=ctf_pad_factor)
    rest = _clean_images_blocked(tables, particles, clean.shape[0], len(particles), box, pixel_size_A, ctf_pad_factor)
    return add_noise(torch.cat([clean, rest]), noise, 0, seed=seed, pixel_size_A=pixel_size_A, sigma=sigma)


# --------------------------------------------------------------------------------------------
# Writing


_SEEK_LOCK = threading.Lock()

#: Direct writes cover whole pages of the file from page-aligned memory (offsets, sizes and
#: addresses multiples of this): the kernel needs the disk's logical block size (512 bytes on most
#: disks; where a device needs more, the first direct write fails and the writer falls back to
#: buffered writes), and a disk with 4 KiB physical blocks rewrites partial ones block by block,
#: while memory that is not page-aligned splits every block in two (each 4× slower on the test
#: machine).
DIRECT_IO_PAGE = PAGE

#: Bytes before the first frame of the MRCS stacks written here (the MRC header, no extended header).
MRC_DATA_OFFSET = 1024


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of file ``fd``: ``os.pwrite`` (safe from several threads
    at once), or a locked seek and write where there is none."""
    while len(data):
        if hasattr(os, "pwrite"):
            written = os.pwrite(fd, data, offset)
        else:  # pragma: no cover - Windows
            with _SEEK_LOCK:
                os.lseek(fd, offset, os.SEEK_SET)
                written = os.write(fd, data)
        data, offset = data[written:], offset + written


class _StackWriter:
    """MRCS stacks of at most ``stack_size`` images, filled batch by batch.

    Each file is created under a temporary name with its final header (mrcfile), filled with
    positioned writes, given its header statistics (from per-image sums kept by frame and
    totalled with ``math.fsum``, which is exact, so the header depends neither on the order nor on
    the chunking of the writes; the data are never read back) and renamed when its last frame is
    written. Where the file system allows it (``O_DIRECT``, Linux; ``CRYOLAB_DIRECT_IO=0``
    turns it off) and the caller's memory lies on the file's pages (:data:`DIRECT_IO_PAGE`:
    ``mapped_empty(..., offset=MRC_DATA_OFFSET)``), the whole file pages a batch covers go to the
    disk directly instead of through the page cache: the same bytes, for a twentieth of the CPU
    time — filling fresh page-cache pages cost ~1 s of CPU per 640 MB on the 2-core test machine,
    a sixth of a simulation — while the calling thread only waits for the device (~600 MB/s
    there). Everything else is written through the page cache.
    """

    def __init__(self, folder: Path, prefix: str, n: int, box: int, pixel_size_A: float, stack_size: int):
        self.folder, self.prefix, self.n, self.box = folder, prefix, n, box
        self.pixel_size_A, self.stack_size = pixel_size_A, stack_size
        self.n_files = (n + stack_size - 1) // stack_size
        self.paths = [folder / f"{prefix}_{k + 1:05d}.mrcs" for k in range(self.n_files)]
        self._open: dict[int, tuple] = {}
        self._lock = threading.Lock()
        self.direct = hasattr(os, "O_DIRECT") and os.environ.get("CRYOLAB_DIRECT_IO", "1") != "0"

    def frame_of(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return i // self.stack_size, i % self.stack_size

    def _file(self, k: int):
        with self._lock:
            if k not in self._open:
                count = min(self.stack_size, self.n - k * self.stack_size)
                tmp = self.paths[k].with_name(f".{self.paths[k].name}.{uuid.uuid4().hex[:8]}.tmp")
                with mrcfile.new_mmap(tmp, shape=(count, self.box, self.box), mrc_mode=2, overwrite=True) as mrc:
                    mrc.set_image_stack()
                    mrc.voxel_size = float(self.pixel_size_A)
                    mrc.header.label[0] = b"cryolab simulate"  # no time stamp: same seed, same bytes
                    mrc.header.nlabl = 1
                    # (MRC_DATA_OFFSET; were it not, the frames would not lie on the pages of the
                    # batch buffers and would all be written through the page cache: the same bytes)
                    layout = (mrc.header.dtype, mrc.header.nbytes + mrc.extended_header.nbytes)
                stats = {"min": math.inf, "max": -math.inf, "sums": np.zeros(count), "sumsqs": np.zeros(count),
                         "count": 0, "size": count}
                fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
                direct_fd = None
                if self.direct:
                    try:
                        direct_fd = os.open(tmp, os.O_RDWR | os.O_DIRECT)
                    except OSError:  # (e.g. tmpfs)
                        self.direct = False
                self._open[k] = (fd, direct_fd, tmp, stats, layout)
            return self._open[k]

    def _write_frames(self, fd: int, direct_fd, block: np.ndarray, offset: int) -> None:
        """The whole pages of the file that ``block`` covers directly, the partial pages at its ends
        through the page cache (batches come in order, so a page is never written both ways)."""
        data = memoryview(block).cast("B")
        start = -offset % DIRECT_IO_PAGE
        stop = len(data) - (offset + len(data)) % DIRECT_IO_PAGE
        if (self.direct and direct_fd is not None and start < stop
                and (block.ctypes.data + start) % DIRECT_IO_PAGE == 0):
            try:
                _write_at(direct_fd, data[start:stop], offset + start)
            except OSError:  # an alignment the device does not take: through the page cache from now on
                self.direct = False
            else:
                _write_at(fd, data[:start], offset)
                _write_at(fd, data[stop:], offset + stop)
                return
        _write_at(fd, data, offset)

    def write(self, start: int, images: torch.Tensor, statistics=None) -> None:
        """Write ``images`` as frames ``start, start + 1, …``; ``statistics`` is their
        :func:`~cryolab.simulate._compiled.stack_statistics` when already computed."""
        data = images.detach().cpu().numpy()
        if data.dtype != np.float32 or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=np.float32)
        if statistics is None:
            statistics = stack_statistics(images)
        _, _, sums, sums_of_squares = statistics
        i = start
        while i < start + data.shape[0]:
            k, frame = divmod(i, self.stack_size)
            fd, direct_fd, tmp, stats, (_, data_offset) = self._file(k)
            take = min(stats["size"] - frame, start + data.shape[0] - i)
            block = data[i - start:i - start + take]
            self._write_frames(fd, direct_fd, block, data_offset + frame * block[0].nbytes)
            if take == data.shape[0]:
                lo, hi = statistics[0], statistics[1]
            else:
                flat = block.reshape(take, -1)
                lo, hi = float(flat.min()), float(flat.max())
            with self._lock:
                stats["min"] = min(stats["min"], lo)
                stats["max"] = max(stats["max"], hi)
                stats["sums"][frame:frame + take] = sums[i - start:i - start + take]  # per image, by frame
                stats["sumsqs"][frame:frame + take] = sums_of_squares[i - start:i - start + take]
                stats["count"] += take
                if stats["count"] == stats["size"]:
                    self._finish(k)
            i += take

    def _finish(self, k: int) -> None:
        """Header statistics, close and rename (with the lock held)."""
        fd, direct_fd, tmp, stats, (header_dtype, _) = self._open.pop(k)
        if direct_fd is not None:
            os.close(direct_fd)
        npix = stats["size"] * self.box * self.box
        mean = math.fsum(stats["sums"].tolist()) / npix
        os.lseek(fd, 0, os.SEEK_SET)
        header = np.frombuffer(os.read(fd, header_dtype.itemsize), dtype=header_dtype).copy()
        header["dmin"], header["dmax"] = stats["min"], stats["max"]
        header["dmean"] = mean
        header["rms"] = math.sqrt(max(math.fsum(stats["sumsqs"].tolist()) / npix - mean * mean, 0.0))
        _write_at(fd, memoryview(header.tobytes()), 0)
        os.close(fd)
        os.replace(tmp, self.paths[k])

    def abort(self) -> None:
        with self._lock:
            for k in list(self._open):
                fd, direct_fd, tmp, _, _ = self._open.pop(k)
                os.close(fd)
                if direct_fd is not None:
                    os.close(direct_fd)
                tmp.unlink(missing_ok=True)


def particle_table(particles: ParticleParameters, *, pixel_size_A: float, box_size: int, image_names,
                   optics: dict | None = None) -> pd.DataFrame:
    """The RELION particle table of simulated particles (optics columns on every row).

    Columns: ``rlnImageName``, ``rlnAngleRot/Tilt/Psi``, ``rlnOriginXAngst/YAngst``, the CTF
    columns (``rlnDefocusU/V/Angle``, … from :meth:`CTFParams.to_columns`; optics from
    ``optics`` or :data:`DEFAULT_OPTICS` without CTF), ``rlnImagePixelSize``, ``rlnImageSize``,
    ``rlnImageDimensionality``, ``rlnOpticsGroup``, ``rlnRandomSubset`` (1, 2, 1, 2, …),
    ``cryolabState`` (1-based, with several maps), ``cryolabLatent`` (trajectories) and, for a
    tilted stage, ``cryolabMicrographXAngst/YAngst`` and ``cryolabDefocusOffsetAngst``.
    """
    n = len(particles)
    cols: dict[str, object] = {"rlnImageName": np.asarray(image_names, dtype=object)}
    e = particles.euler_deg.double().numpy()
    cols.update(rlnAngleRot=e[:, 0], rlnAngleTilt=e[:, 1], rlnAnglePsi=e[:, 2])
    s = particles.shifts_A.double().numpy()
    cols.update(rlnOriginXAngst=s[:, 0], rlnOriginYAngst=s[:, 1])
    if particles.ctf is not None:
        for k, v in particles.ctf.to_columns().items():
            cols[k] = np.broadcast_to(v, (n,)).copy()
    else:
        for k, v in (optics or DEFAULT_OPTICS).items():
            cols[k] = np.full(n, float(v))
    cols["rlnCtfDataAreCtfPremultiplied"] = np.zeros(n, dtype=np.int64)
    cols["rlnImagePixelSize"] = np.full(n, float(pixel_size_A))
    cols["rlnImageSize"] = np.full(n, int(box_size), dtype=np.int64)
    cols["rlnImageDimensionality"] = np.full(n, 2, dtype=np.int64)
    cols["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
    cols["rlnRandomSubset"] = (np.arange(n) % 2 + 1).astype(np.int64)
    maps = particles.maps
    if maps.latent is not None or int(maps.map_indices.max()) > 0:
        cols["cryolabState"] = maps.state.numpy().astype(np.int64) + 1
    if maps.latent is not None:
        cols["cryolabLatent"] = maps.latent.double().numpy()
    if particles.micrograph_xy_A is not None:
        xy = particles.micrograph_xy_A.double().numpy()
        cols.update(cryolabMicrographXAngst=xy[:, 0], cryolabMicrographYAngst=xy[:, 1])
    if particles.defocus_offset_A is not None:
        cols["cryolabDefocusOffsetAngst"] = particles.defocus_offset_A.double().numpy()
    table = pd.DataFrame(cols)
    for name in table.columns:  # float32 values, written with float32's shortest decimal
        if pd.api.types.is_float_dtype(table[name]):
            table[name] = table[name].astype(np.float32)
    return table


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`write_dataset` wrote, and a few examples for a montage."""

    star_path: Path
    stack_paths: list
    clean_stack_paths: list
    metadata: dict
    example_clean: torch.Tensor
    example_noisy: torch.Tensor
    table: pd.DataFrame = field(repr=False, default=None)


def _box_of(volumes) -> int:
    v = volumes if not isinstance(volumes, (list, tuple)) else volumes[0]
    return int(as_tensor(v).shape[-1])


def write_dataset(volumes, particles: ParticleParameters, outdir, pixel_size_A: float, *, noise=None, seed: int = 0,
                  batch_size: int | None = None, workers: int | None = None, stack_size: int = 10000,
                  write_clean: bool = False,
                  ctf_pad_factor: float = 2, projection_pad_factor: float = 2, n_examples: int = 8,
                  star_name: str = "particles.star", metadata: dict | None = None,
                  show_progress: bool = True) -> SimulationResult:
    """Simulate ``particles`` from ``volumes`` and stream them to disk (module docstring).

    Parameters
    ----------
    volumes
        One cubic map ``(N, N, N)`` or a list of maps of one size (indexed by ``particles.maps``),
        voxel size ``pixel_size_A``. The lookup tables of all maps are held in memory
        (``8 P² (P/2 + 1)`` bytes each, ``P = 2N``: 67 MB per map at N = 128).
    particles
        Per-particle parameters (poses, shifts, CTF, map assignment).
    outdir
        Folder for ``particles.star``, ``particles_#####.mrcs``, ``clean_#####.mrcs`` (with
        ``write_clean``) and ``simulation.json``; created if needed. Image names in the STAR
        file are relative to it (run RELION from inside it).
    pixel_size_A
        Pixel size in Å (> 0).
    noise
        :class:`GaussianNoise`, :class:`PoissonNoise` or None (clean images only).
    seed
        Master seed of the noise (the parameters were drawn by the caller).
    batch_size
        Images computed by a worker at a time (rounded up to a multiple of :func:`block_size`;
        default :func:`default_batch_size`); sets speed and memory, not the output.
    workers
        Threads computing batches in parallel (default: the CPU cores this process may use); the
        calling thread writes them. Sets speed, not the output.
    stack_size
        Images per MRCS file.
    write_clean
        Also write the clean images (on the same scale as the noisy ones).
    ctf_pad_factor, projection_pad_factor
        Canvas for shift and CTF; oversampling of the projector's 3D transform.
    n_examples
        Number of leading particles returned for a montage.
    metadata
        Extra entries for ``simulation.json`` (e.g. how the poses were drawn).

    Returns
    -------
    SimulationResult
    """
    if not (pixel_size_A and pixel_size_A > 0):
        raise InputError(f"pixel size must be positive (Å), got {pixel_size_A}")
    box = _box_of(volumes)
    if batch_size is None:
        batch_size = default_batch_size(box)
    if batch_size < 1 or stack_size < 1:
        raise InputError(f"batch size and stack size must be >= 1, got {batch_size}, {stack_size}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if noise is not None and not isinstance(noise, (GaussianNoise, PoissonNoise)):
        raise InputError(f"unknown noise model {noise!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    n = len(particles)
    batch_size = -(-batch_size // block_size(box)) * block_size(box)  # whole blocks
    batches = batch_bounds(n, batch_size, block_size(box), workers)
    workers = max(1, min(workers, len(batches)))

    noisy_writer = _StackWriter(outdir, "particles", n, box, pixel_size_A, stack_size)
    clean_writer = _StackWriter(outdir, "clean", n, box, pixel_size_A, stack_size) if write_clean else None
    k, frame = noisy_writer.frame_of(np.arange(n))
    names = [f"{f + 1:06d}@{noisy_writer.paths[j].name}" for j, f in zip(k.tolist(), frame.tolist())]
    star_path = outdir / star_name
    staged_star = outdir / f".{star_name}.{uuid.uuid4().hex[:8]}.pending"  # renamed when the stacks are complete
    tables = None
    sigma = None
    calibration = torch.zeros(0, box, box)  # clean images of the first particles, when already computed
    noise_info: dict = {"model": "none"}
    if isinstance(noise, PoissonNoise):
        noise_info = {**noise.describe(), "mean_counts_per_pixel": noise.mean_counts(pixel_size_A)}
    examples_clean, examples_noisy = [], []
    workspace = threading.local()  # per worker thread: the slice buffer
    # Image buffers of written batches are handed back and reused: fresh 10-100 MB tensors cost a
    # page fault (and the kernel's zeroing) per 4 KiB, a third of the CPU time of a simulation.
    free_buffers: collections.deque = collections.deque()

    def buffer(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            base = free_buffers.pop()
        except IndexError:
            base = mapped_empty((batch_size, box, box), offset=MRC_DATA_OFFSET)  # (on the file's pages)
        return base[:count], base

    def stage_star() -> pd.DataFrame:
        table = particle_table(particles, pixel_size_A=pixel_size_A, box_size=box, image_names=names)
        write_star(staged_star, table)
        return table

    def compute(lo: int, hi: int):
        """Batch ``lo … hi − 1`` (on a worker): clean and noisy images and their stack statistics."""
        clean, clean_base = buffer(hi - lo)
        bases = [clean_base]
        done = min(max(calibration.shape[0] - lo, 0), hi - lo)
        if done:
            clean[:done] = calibration[lo:lo + done]
        _clean_images_blocked(tables, particles, lo + done, hi, box, pixel_size_A, ctf_pad_factor,
                              workspace=workspace, out=clean[done:])
        out = None
        if isinstance(noise, GaussianNoise):
            noisy, noisy_base = buffer(hi - lo)
            bases.append(noisy_base)
            out = (clean, noisy)  # clean / σ in place
        with _single_threaded():
            clean_out, noisy = add_noise(clean, noise, lo, seed=seed, pixel_size_A=pixel_size_A, sigma=sigma, out=out)
        noisy_stats = stack_statistics(noisy)
        clean_stats = None
        if clean_writer is not None:
            clean_stats = noisy_stats if clean_out is noisy else stack_statistics(clean_out)
        return clean_out, noisy, noisy_stats, clean_stats, bases

    def collect(lo: int, result) -> None:
        """Write a computed batch (here, while the workers compute the next ones)."""
        clean_out, noisy, noisy_stats, clean_stats, bases = result
        noisy_writer.write(lo, noisy, noisy_stats)
        if clean_writer is not None:
            clean_writer.write(lo, clean_out, clean_stats)
        take = max(0, min(n_examples - lo, noisy.shape[0]))
        if take:
            examples_clean.append(clean_out[:take].clone())
            examples_noisy.append(noisy[:take].clone())
        free_buffers.extend(bases)
        bar.update(noisy.shape[0])

    # Batches run on worker threads (the numba kernels and torch release the GIL), each computed by
    # one thread, single-threaded, and are written here in order (mostly waiting for the disk, see
    # _StackWriter) while the workers compute the next ones; two batches per worker are in flight
    # (one computed, one queued: a worker never waits for this thread), and one is being written.
    # Every batch is computed the same way on whichever thread, so the files do not depend on the
    # number of workers.
    bar = progress(total=n, desc="simulate", unit="img", enabled=show_progress)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="cryolab-simulate",
                                                 initializer=torch.set_num_threads, initargs=(1,))
    try:
        star_job = pool.submit(stage_star)  # (pandas, under the GIL) while the tables' FFTs run
        with _single_threaded():
            tables = prepare_maps(volumes, pad_factor=projection_pad_factor, executor=pool)
            if isinstance(noise, GaussianNoise):
                sigma, calibration = calibrate_gaussian_sigma(tables, particles, noise, box, pixel_size_A,
                                                              ctf_pad_factor=ctf_pad_factor)
                noise_info = {**noise.describe(), "sigma": sigma, "calibrated_on_first": min(n, CALIBRATION_COUNT),
                              "output": "images divided by sigma: noise std 1"}
            waiting = collections.deque(batches)
            pending = collections.deque()
            while waiting and len(pending) < 2 * workers:
                lo, hi = waiting.popleft()
                pending.append((lo, pool.submit(compute, lo, hi)))
            table = star_job.result()
            while pending:
                lo, future = pending.popleft()
                result = future.result()
                if waiting:  # (before writing: a worker that finishes meanwhile finds its next batch)
                    next_lo, next_hi = waiting.popleft()
                    pending.append((next_lo, pool.submit(compute, next_lo, next_hi)))
                collect(lo, result)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        noisy_writer.abort()
        if clean_writer is not None:
            clean_writer.abort()
        staged_star.unlink(missing_ok=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()

    from cryolab import __version__

    meta = {
        "cryolab_version": __version__,
        "n_particles": n,
        "box_size": box,
        "pixel_size_A": pixel_size_A,
        "seed": seed,
        "noise": noise_info,
        "ctf": "none" if particles.ctf is None else {"applied_on_canvas_of": f"{ctf_pad_factor:g} x box",
                                                      "convention": "RELION (docs/conventions.md)"},
        "projection": {"method": "Fourier slice, trilinear", "pad_factor": projection_pad_factor},
        "contrast": "protein white (projection of positive density times the CTF)",
        "n_maps": int(tables.shape[0]),
        "stack_size": stack_size,
        **(metadata or {}),
    }
    meta_path = outdir / "simulation.json"
    tmp = meta_path.with_name(f".{meta_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, meta_path)
    os.replace(staged_star, star_path)
    return SimulationResult(
        star_path=star_path, stack_paths=list(noisy_writer.paths),
        clean_stack_paths=list(clean_writer.paths) if clean_writer else [], metadata=meta,
        example_clean=torch.cat(examples_clean) if examples_clean else torch.zeros(0, box, box),
        example_noisy=torch.cat(examples_noisy) if examples_noisy else torch.zeros(0, box, box),
        table=table,
    )

