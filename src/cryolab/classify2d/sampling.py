"""Sampling for 2D classification: offset grids, in-plane rotation of images and Fourier weights, masks.

Conventions (docs/conventions.md, :func:`cryolab.rotations.inplane_rotation_matrix`): an image
at in-plane angle psi of a reference ``A`` is ``image(x) = A(Rᵀ x)`` with
``R = [[cos psi, sin psi], [-sin psi, cos psi]]`` acting on centred ``(x, y)`` coordinates (origin
at pixel ``N // 2``); an origin ``o`` (Å, ``rlnOriginXAngst/YAngst``) then gives
``image(x) = P(x + o)``. A rotation of a function rotates its Fourier transform the same way, so
the transform of the rotated image is ``F_A(Rᵀ k)``.

References
----------
S. H. W. Scheres, "A Bayesian view on cryo-EM structure determination", J. Mol. Biol. 415,
406–418 (2012); RELION 3.1 ``src/ml_optimiser.cpp`` (circular offset grid within
``--offset_range`` at ``--offset_step``).
"""

from __future__ import annotations

import math

import torch

from cryolab._tensor import as_tensor, broadcast_shapes
from cryolab.errors import InputError
from cryolab.interpolate import sample_grid_2d
from cryolab.rotations import inplane_rotation_matrix

__all__ = ["offset_grid_A", "rotate_images"]


def offset_grid_A(range_A: float, step_A: float) -> torch.Tensor:
    """Origin offsets ``(x, y)`` in Å on a square grid of ``step_A``, within a disc of ``range_A``.

    RELION's translational sampling for 2D: every grid point ``step · (i, j)`` with
    ``|step · (i, j)| <= range`` (a tiny tolerance keeps points exactly on the circle).

    Returns
    -------
    float32 ``(T, 2)`` offsets, ``(0, 0)`` first, then ordered by distance from the origin.
    """
    if not (math.isfinite(range_A) and range_A >= 0):
        raise InputError(f"offset range must be >= 0 Å, got {range_A}")
    if not (math.isfinite(step_A) and step_A > 0):
        raise InputError(f"offset step must be positive (Å), got {step_A}")
    n = int(math.floor(range_A / step_A + 1e-6))
    ij = torch.arange(-n, n + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ij, ij, indexing="xy"), dim=-1).reshape(-1, 2) * step_A
    radius = torch.linalg.vector_norm(grid, dim=-1)
    keep = radius <= range_A * (1 + 1e-6) + 1e-9
    grid, radius = grid[keep], radius[keep]
    order = torch.argsort(radius + 1e-9 * torch.arange(len(radius)), stable=True)
    return grid[order].to(torch.float32)


def _centred_coordinates(box_size: int, device, dtype) -> torch.Tensor:
    """``(N*N, 2)`` centred ``(x, y)`` of every pixel of an ``N × N`` image, row-major."""
    c = box_size // 2
    axis = torch.arange(box_size, device=device, dtype=dtype) - c
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def rotate_images(images, psi_deg, *, method: str = "cubic") -> torch.Tensor:
    """Rotate square images in-plane: ``out(x) = image(Rᵀ x)``, RELION's 2D convention.

    Parameters
    ----------
    images
        Real ``(..., N, N)`` images centred at ``N // 2``.
    psi_deg
        ``(...)`` in-plane angles in degrees, broadcasting with the leading dimensions of
        ``images``: ``rotate_images(refs[:, None], psi[None, :])`` gives every reference at every
        angle of a grid (:func:`cryolab.rotations.inplane_angles`).
    method
        Real-space interpolation, ``"cubic"`` (Keys, default) or ``"linear"``; exact at
        multiples of 90°. Samples from outside the box read 0.

    Returns
    -------
    ``(*broadcast, N, N)``. Rotating by ``-psi`` undoes a rotation by ``psi`` (up to
    interpolation and the corners that left the box).
    """
    images = as_tensor(images)
    if images.dim() < 2 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"images must be square (..., N, N), got {tuple(images.shape)}")
    n = images.shape[-1]
    psi = as_tensor(psi_deg, dtype=torch.float64, device=images.device)
    batch = broadcast_shapes(images.shape[:-2], psi.shape)
    rot = inplane_rotation_matrix(psi)  # (..., 2, 2)
    xy = _centred_coordinates(n, images.device, torch.float64)
    # out(x) = image(Rᵀ x): the source point of output pixel x is Rᵀ x (row-vector form x · R)
    source = torch.einsum("pj,...ji->...pi", xy, rot) + n // 2
    source = source.to(images.dtype).expand(*batch, n * n, 2)
    out = sample_grid_2d(images, source, method=method)
    return out.reshape(*batch, n, n)
