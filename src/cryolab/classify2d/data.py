"""Particles in batches for 2D classification: from tensors in memory, or streamed from disk.

Both collections are re-iterable (the EM driver iterates them once per iteration) and yield
:class:`~cryolab.classify2d.model.ParticleBatch` objects. The random half of each particle
(for the per-class FRC) is ``rlnRandomSubset`` (1 or 2) where the table has it, otherwise the
particle's index parity.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.classify2d.model import ParticleBatch
from cryolab.ctf import CTFParams
from cryolab.errors import InputError

__all__ = ["TensorBatches", "ParticleSetBatches", "batches_from_tensors", "batches_from_particles"]


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    return int(batch_size)


def _halves_from_subset(subset, n: int, source=None) -> np.ndarray:
    if subset is None:
        return np.arange(n, dtype=np.int64) % 2
    values = np.asarray(subset)
    if values.shape != (n,) or not np.isin(values, (1, 2)).all():
        raise InputError("rlnRandomSubset must be 1 or 2 for every particle", source)
    return values.astype(np.int64) - 1


class TensorBatches:
    """Batches of images held in memory (tests, notebooks, simulations)."""

    def __init__(self, images, *, ctf: CTFParams | None = None, batch_size: int = 128, halves=None):
        self.images = as_tensor(images, dtype=torch.float32)
        if self.images.dim() != 3:
            raise InputError(f"images must be a stack (n, N, N), got shape {tuple(self.images.shape)}")
        n, ny, nx = self.images.shape
        if ny != nx:
            raise InputError(f"images must be square, got {nx}x{ny} pixels")
        if ctf is not None and len(ctf.batch_shape) and ctf.batch_shape[0] != n:
            raise InputError(f"{n} images but CTF parameters for {ctf.batch_shape[0]}")
        self.ctf = ctf
        self.batch_size = _check_batch_size(batch_size)
        self.halves = torch.as_tensor(_halves_from_subset(None, n) if halves is None else as_tensor(halves, dtype=torch.int64).numpy() % 2)

    @property
    def n_particles(self) -> int:
        return int(self.images.shape[0])

    @property
    def box_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return -(-self.n_particles // self.batch_size)

    def __iter__(self) -> Iterator[ParticleBatch]:
        for lo in range(0, self.n_particles, self.batch_size):
            hi = min(lo + self.batch_size, self.n_particles)
            ctf = None
            if self.ctf is not None:
                ctf = self.ctf[lo:hi] if len(self.ctf.batch_shape) else self.ctf
            yield ParticleBatch(images=self.images[lo:hi], ctf=ctf, indices=torch.arange(lo, hi),
                                halves=self.halves[lo:hi])


class ParticleSetBatches:
    """Batches streamed from a :class:`cryolab.io.ParticleSet` (lazy image stack + table).

    Only ``batch_size`` images are in memory at a time; CTF parameters are read from the table's
    RELION columns per batch.
    """

    def __init__(self, particles, *, batch_size: int = 128, use_ctf: bool = True):
        self.particles = particles
        self.batch_size = _check_batch_size(batch_size)
        self.use_ctf = use_ctf
        table = particles.table
        self.source = table.attrs.get("cryolab_source") if hasattr(table, "attrs") else None
        n, ny, nx = particles.images.shape
        if ny != nx:
            raise InputError(f"particle images must be square, got {nx}x{ny} pixels", self.source)
        self.halves = _halves_from_subset(table["rlnRandomSubset"].to_numpy() if "rlnRandomSubset" in table.columns else None,
                                          n, self.source)
        if use_ctf:
            missing = [c for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle") if c not in table.columns]
            if missing:
                raise InputError(f"no CTF parameters (missing {', '.join(missing)}); give them or use --no-ctf", self.source)

    @property
    def n_particles(self) -> int:
        return len(self.particles)

    @property
    def box_size(self) -> int:
        return int(self.particles.images.shape[-1])

    @property
    def pixel_size_A(self) -> float:
        return float(self.particles.pixel_size_A)

    def __len__(self) -> int:
        return -(-self.n_particles // self.batch_size)

    def __iter__(self) -> Iterator[ParticleBatch]:
        table = self.particles.table
        for positions, images in self.particles.images.iter_chunks(self.batch_size):
            finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
            if not finite.all():
                bad = int(positions[~finite][0])
                raise InputError(f"particle {bad + 1} (1-based) has NaN or infinite pixel values", self.source)
            ctf = None
            if self.use_ctf:
                try:
                    ctf = CTFParams.from_table(table.iloc[positions])
                except InputError as exc:
                    raise InputError(exc.problem, self.source) from None
            yield ParticleBatch(images=torch.from_numpy(images), ctf=ctf, indices=torch.from_numpy(positions.astype(np.int64)),
                                halves=torch.from_numpy(self.halves[positions]))


def batches_from_tensors(images, *, ctf: CTFParams | None = None, batch_size: int = 128, halves=None) -> TensorBatches:
    """Re-iterable batches of in-memory images ``(n, N, N)`` with optional CTF parameters ``(n,)``."""
    return TensorBatches(images, ctf=ctf, batch_size=batch_size, halves=halves)


def batches_from_particles(particles, *, batch_size: int = 128, use_ctf: bool = True) -> ParticleSetBatches:
    """Re-iterable batches streamed from :func:`cryolab.io.read_particles`' result."""
    return ParticleSetBatches(particles, batch_size=batch_size, use_ctf=use_ctf)
