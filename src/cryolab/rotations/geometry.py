"""Applying rotation matrices to points and measuring the angle between rotations."""

from __future__ import annotations

import math

import torch

from cryolab.errors import InputError
from cryolab.rotations._common import as_float_tensor


def rotate_points(points, matrix) -> torch.Tensor:
    """Apply rotation matrices to points: ``p' = M p`` for every point.

    Parameters
    ----------
    points
        ``(..., N, 3)`` vectors ordered ``(x, y, z)``.
    matrix
        ``(..., 3, 3)`` matrices; their leading dimensions broadcast against those of
        ``points`` (without N). With RELION's A this maps map coordinates into the view frame;
        pass ``A.transpose(-1, -2)`` for view-to-map.

    Returns
    -------
    ``(..., N, 3)`` rotated points, in the promoted dtype of the inputs.
    """
    p = as_float_tensor(points, name="points", last_dims=(3,))
    m = as_float_tensor(matrix, name="matrix", last_dims=(3, 3))
    if p.ndim < 2:
        raise InputError(f"points must have shape (..., N, 3), got {tuple(p.shape)}")
    dtype = torch.promote_types(p.dtype, m.dtype)
    return torch.matmul(p.to(dtype), m.to(dtype).transpose(-1, -2))


def geodesic_distance_deg(a, b) -> torch.Tensor:
    """Angle in degrees of the relative rotation ``aᵀ b`` (geodesic distance on SO(3)).

    Parameters
    ----------
    a, b
        ``(..., 3, 3)`` rotation matrices; leading dimensions broadcast.

    Returns
    -------
    ``(...)`` angle in [0, 180] degrees; the same for ``aᵀ b``, ``a bᵀ``, ``bᵀ a`` and ``b aᵀ``
    (they are conjugate or inverse to each other).

    Notes
    -----
    With ``R = aᵀ b``: ``cos θ = (tr R - 1) / 2`` and ``sin θ = |R - Rᵀ|_F / (2√2)``;
    ``θ = atan2(sin θ, cos θ)`` is accurate at every angle, unlike ``arccos`` near 0 and 180°.
    """
    a = as_float_tensor(a, name="a", last_dims=(3, 3))
    b = as_float_tensor(b, name="b", last_dims=(3, 3))
    dtype = torch.promote_types(a.dtype, b.dtype)
    r = torch.matmul(a.to(dtype).transpose(-1, -2), b.to(dtype))
    cos = 0.5 * (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    sin = torch.linalg.matrix_norm(r - r.transpose(-1, -2)) / (2 * math.sqrt(2))
    return torch.rad2deg(torch.atan2(sin, cos))
