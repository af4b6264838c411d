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
its own interpolation, whatever the batch).

Streaming. Images are computed ``batch_size`` at a time and written into memory-mapped MRCS
stacks of at most ``stack_size`` images each (``particles_00001.mrcs``, …), whose header
statistics are accumulated chunk by chunk; nothing holds the whole data set in memory. Every
file is written under a temporary name and renamed when complete; the STAR file comes last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
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
from cryolab.fourier.transforms import irfft_centered
from cryolab.projection import apply_shifts_rfft, extract_central_slices_rfft, prepare_volume_for_projection
from cryolab.rotations import relion_euler_to_matrix
from cryolab.simulate.ctf_sampling import apply_ctf_padded
from cryolab.simulate.noise import (GaussianNoise, PoissonNoise, add_gaussian_noise, gaussian_noise_sigma,
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


def prepare_maps(volumes, *, pad_factor: float = 2) -> torch.Tensor:
    """Central-slice lookup tables ``(M, P, P, P//2 + 1)`` of ``M`` cubic maps of one size.

    See :func:`cryolab.projection.prepare_volume_for_projection` (``pad_factor`` oversamples
    the 3D transform; 2 as RELION).
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
    tables = [prepare_volume_for_projection(v, pad_factor=pad_factor) for v in vols]
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
    on a busy 2-core machine two threads made the simulation 4× slower in wall time and CPU time
    (benchmarks/simulate.py). Parallelism belongs one level up: data sets in separate processes."""
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


def _images_from_slices(slices: torch.Tensor, particles: ParticleParameters, box_size: int, pixel_size_A: float,
                        ctf_pad_factor: float) -> torch.Tensor:
    """Real images from central slices: shift and CTF in Fourier space, or on a padded canvas."""
    n = slices.shape[0]
    images = torch.empty(n, box_size, box_size)
    chunk = fft_chunk_size(box_size)
    ctf = particles.ctf
    per_particle_ctf = ctf is not None and len(ctf.batch_shape) > 0 and ctf.batch_shape[0] > 1
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        shifts = particles.shifts_A[lo:hi]
        _chunk_images(slices[lo:hi], ctf[lo:hi] if per_particle_ctf else ctf,
                      shifts if bool((shifts != 0).any()) else None, box_size, pixel_size_A, ctf_pad_factor,
                      out=images[lo:hi])
    return images


def _chunk_images(slices, ctf, shifts, box_size: int, pixel_size_A: float, ctf_pad_factor: float, *,
                  out: torch.Tensor) -> None:
    if max(box_size, int(round(ctf_pad_factor * box_size))) == box_size:  # no canvas: stay in Fourier space
        # irfft_centered = fftshift ∘ irfftn; the recentring is a translation by N//2 pixels,
        # folded into the shift's phase ramp (cheaper than a pass over the real images).
        recentre = torch.full((1, 2), float(box_size // 2) * pixel_size_A)
        slices = apply_shifts_rfft(slices, -recentre if shifts is None else shifts - recentre, pixel_size_A)
        if ctf is not None:
            slices *= ctf_2d(ctf, (box_size, box_size), pixel_size_A, rfft=True).to(torch.complex64)
        torch.fft.irfft2(slices, s=(box_size, box_size), out=out)
        return
    images = irfft_centered(slices, (box_size, box_size))
    out.copy_(apply_ctf_padded(images, ctf, pixel_size_A, pad_factor=ctf_pad_factor, shifts_A=shifts))


def _central_slices(tables: torch.Tensor, particles: ParticleParameters, rot: torch.Tensor,
                    box_size: int) -> torch.Tensor:
    """Central slices ``(n, N, N//2 + 1)`` of the particles' maps (weighted sums for blends)."""
    idx, w = particles.maps.map_indices, particles.maps.map_weights
    used = torch.unique(idx[w != 0]).tolist()
    for m in used:
        if not 0 <= m < tables.shape[0]:
            raise InputError(f"particle refers to map {m} but only {tables.shape[0]} map(s) were given")
    if len(used) == 1 and bool(((w * (idx == used[0])).sum(dim=-1) == 1).all()):  # one map, unit weights
        return extract_central_slices_rfft(tables[used[0]], rot, (box_size, box_size))
    slices = torch.zeros(len(particles), box_size, box_size // 2 + 1, dtype=torch.complex64)
    for m in used:
        weight = (w * (idx == m)).sum(dim=-1)
        sel = torch.nonzero(weight != 0).squeeze(-1)
        part = extract_central_slices_rfft(tables[m], rot[sel], (box_size, box_size))
        slices[sel] += weight[sel, None, None].to(torch.complex64) * part
    return slices


def _clean_images_blocked(tables, particles: ParticleParameters, start: int, stop: int, box_size: int,
                          pixel_size_A: float, ctf_pad_factor: float) -> torch.Tensor:
    """Clean images of particles ``start … stop − 1`` computed in aligned blocks of :func:`block_size`.

    ``start`` must be a multiple of the block size. FFT libraries may round differently for
    different batch shapes; computing every image in the same block makes the output independent
    of how the caller batches.
    """
    block = block_size(box_size)
    if start < stop and start % block:
        raise ValueError(f"start {start} is not a multiple of the block size {block}")
    if start >= stop:
        return torch.zeros(0, box_size, box_size)
    # The projector's values do not depend on the batch (each is its own interpolation), so all
    # slices come from one sweep over the table; the FFTs run in chunks aligned with the blocks.
    part = particles.select(slice(start, stop))
    with _single_threaded():
        slices = _central_slices(tables, part, relion_euler_to_matrix(part.euler_deg), box_size)
        return _images_from_slices(slices, part, box_size, pixel_size_A, ctf_pad_factor)


def add_noise(clean, noise, first_index: int, *, seed: int, pixel_size_A: float,
              sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        scaled = clean / sigma
        noisy = torch.empty_like(scaled)
        for j, s in enumerate(seeds.tolist()):
            g.manual_seed(s)
            noisy[j] = add_gaussian_noise(scaled[j], 1.0, generator=g)
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


class _StackWriter:
    """MRCS stacks of at most ``stack_size`` images, filled chunk by chunk.

    Each file is created under a temporary name with its final header (mrcfile), filled with
    plain sequential writes (cheaper than page faults through a memory map), given its header
    statistics (accumulated per chunk, so the data are never read back) and renamed.
    """

    def __init__(self, folder: Path, prefix: str, n: int, box: int, pixel_size_A: float, stack_size: int):
        self.folder, self.prefix, self.n, self.box = folder, prefix, n, box
        self.pixel_size_A, self.stack_size = pixel_size_A, stack_size
        self.n_files = (n + stack_size - 1) // stack_size
        self.paths = [folder / f"{prefix}_{k + 1:05d}.mrcs" for k in range(self.n_files)]
        self._open: dict[int, tuple] = {}

    def frame_of(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return i // self.stack_size, i % self.stack_size

    def _file(self, k: int):
        if k not in self._open:
            count = min(self.stack_size, self.n - k * self.stack_size)
            tmp = self.paths[k].with_name(f".{self.paths[k].name}.{uuid.uuid4().hex[:8]}.tmp")
            with mrcfile.new_mmap(tmp, shape=(count, self.box, self.box), mrc_mode=2, overwrite=True) as mrc:
                mrc.set_image_stack()
                mrc.voxel_size = float(self.pixel_size_A)
                mrc.header.label[0] = b"cryolab simulate"  # no time stamp: same seed, same bytes
                mrc.header.nlabl = 1
                layout = (mrc.header.dtype, mrc.header.nbytes + mrc.extended_header.nbytes)
            stats = {"min": math.inf, "max": -math.inf, "sums": [], "sumsqs": [], "count": 0, "size": count}
            self._open[k] = (open(tmp, "r+b"), tmp, stats, layout)
        return self._open[k]

    def write(self, start: int, images: torch.Tensor) -> None:
        data = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        i = start
        while i < start + data.shape[0]:
            k, frame = divmod(i, self.stack_size)
            file, tmp, stats, (_, data_offset) = self._file(k)
            take = min(stats["size"] - frame, start + data.shape[0] - i)
            block = data[i - start:i - start + take]
            file.seek(data_offset + frame * block[0].nbytes)
            file.write(memoryview(block).cast("B"))
            flat = block.reshape(take, -1)
            stats["min"] = min(stats["min"], float(flat.min()))
            stats["max"] = max(stats["max"], float(flat.max()))
            stats["sums"].extend(flat.sum(axis=1, dtype=np.float64).tolist())  # per image, so that the
            stats["sumsqs"].extend(np.einsum("ij,ij->i", flat, flat, dtype=np.float64).tolist())  # totals
            stats["count"] += take  # below do not depend on chunking
            if stats["count"] == stats["size"]:
                self._finish(k)
            i += take

    def _finish(self, k: int) -> None:
        file, tmp, stats, (header_dtype, _) = self._open.pop(k)
        npix = stats["size"] * self.box * self.box
        mean = math.fsum(stats["sums"]) / npix
        file.seek(0)
        header = np.frombuffer(file.read(header_dtype.itemsize), dtype=header_dtype).copy()
        header["dmin"], header["dmax"] = stats["min"], stats["max"]
        header["dmean"] = mean
        header["rms"] = math.sqrt(max(math.fsum(stats["sumsqs"]) / npix - mean * mean, 0.0))
        file.seek(0)
        file.write(header.tobytes())
        file.close()
        os.replace(tmp, self.paths[k])

    def abort(self) -> None:
        for k in list(self._open):
            file, tmp, _, _ = self._open.pop(k)
            file.close()
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
                  batch_size: int = 256, stack_size: int = 10000, write_clean: bool = False,
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
        Images computed between writes (rounded up to a multiple of :func:`block_size`); sets
        the memory used, not the output.
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
    if batch_size < 1 or stack_size < 1:
        raise InputError(f"batch size and stack size must be >= 1, got {batch_size}, {stack_size}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    n = len(particles)
    box = _box_of(volumes)
    batch_size = -(-batch_size // block_size(box)) * block_size(box)  # whole blocks
    tables = prepare_maps(volumes, pad_factor=projection_pad_factor)

    sigma = None
    calibration = torch.zeros(0, box, box)  # clean images of the first particles, when already computed
    noise_info: dict = {"model": "none"}
    if isinstance(noise, GaussianNoise):
        sigma, calibration = calibrate_gaussian_sigma(tables, particles, noise, box, pixel_size_A,
                                                      ctf_pad_factor=ctf_pad_factor)
        noise_info = {**noise.describe(), "sigma": sigma, "calibrated_on_first": min(n, CALIBRATION_COUNT),
                      "output": "images divided by sigma: noise std 1"}
    elif isinstance(noise, PoissonNoise):
        noise_info = {**noise.describe(), "mean_counts_per_pixel": noise.mean_counts(pixel_size_A)}
    elif noise is not None:
        raise InputError(f"unknown noise model {noise!r}")

    noisy_writer = _StackWriter(outdir, "particles", n, box, pixel_size_A, stack_size)
    clean_writer = _StackWriter(outdir, "clean", n, box, pixel_size_A, stack_size) if write_clean else None
    examples_clean, examples_noisy = [], []
    bar = progress(total=n, desc="simulate", unit="img", enabled=show_progress)
    try:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            done = min(max(calibration.shape[0] - lo, 0), hi - lo)
            clean = _clean_images_blocked(tables, particles, lo + done, hi, box, pixel_size_A, ctf_pad_factor)
            if done:
                clean = torch.cat([calibration[lo:lo + done], clean])
            clean_out, noisy = add_noise(clean, noise, lo, seed=seed, pixel_size_A=pixel_size_A, sigma=sigma)
            noisy_writer.write(lo, noisy)
            if clean_writer is not None:
                clean_writer.write(lo, clean_out)
            if lo < n_examples:
                take = min(n_examples - lo, hi - lo)
                examples_clean.append(clean_out[:take].clone())
                examples_noisy.append(noisy[:take].clone())
            bar.update(hi - lo)
    except BaseException:
        noisy_writer.abort()
        if clean_writer is not None:
            clean_writer.abort()
        raise
    finally:
        bar.close()

    k, frame = noisy_writer.frame_of(np.arange(n))
    names = [f"{f + 1:06d}@{noisy_writer.paths[j].name}" for j, f in zip(k.tolist(), frame.tolist())]
    table = particle_table(particles, pixel_size_A=pixel_size_A, box_size=box, image_names=names)
    from cryolab import __version__
    from cryolab.io import write_star

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
    star_path = write_star(outdir / star_name, table)
    return SimulationResult(
        star_path=star_path, stack_paths=list(noisy_writer.paths),
        clean_stack_paths=list(clean_writer.paths) if clean_writer else [], metadata=meta,
        example_clean=torch.cat(examples_clean) if examples_clean else torch.zeros(0, box, box),
        example_noisy=torch.cat(examples_noisy) if examples_noisy else torch.zeros(0, box, box),
        table=table,
    )

