"""Rotation vectors (axis × angle, cryoSPARC's pose storage) and axis-angle rotations.

A rotation vector ``v = θ n`` (θ in radians, n a unit axis) stands for the active, right-handed
rotation by θ about n: ``R = exp([v]×) = I + sin θ [n]× + (1 - cos θ) [n]×²`` (Rodrigues), equal
to SciPy's ``Rotation.from_rotvec(v).as_matrix()``.

Whether a file's rotation vector describes RELION's A or its transpose is decided where the
file is read (``cryolab.io``); these functions only convert between representations.

References
----------
Rodrigues, J. Math. Pures Appl. 5 (1840) 380-440; Murray, Li & Sastry, *A Mathematical
Introduction to Robotic Manipulation* (1994), §2.2.
"""

from __future__ import annotations

import torch

from cryolab.errors import InputError
from cryolab.rotations._common import as_float_tensor
from cryolab.rotations.quaternions import matrix_to_quaternion, quaternion_to_matrix


def rotvec_to_quaternion(rotvec) -> torch.Tensor:
    """Unit quaternion ``(cos(θ/2), sin(θ/2) n)`` of rotation vectors ``θ n``; shape ``(..., 3) -> (..., 4)``.

    Stable at θ = 0 (series for ``sin(θ/2) / θ``) with finite gradients there.
    """
    v = as_float_tensor(rotvec, name="rotvec", last_dims=(3,))
    theta_sq = (v * v).sum(dim=-1, keepdim=True)
    small = theta_sq < 1e-6
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    # sin(θ/2)/θ = 1/2 - θ²/48 + θ⁴/3840 - ...
    series = 0.5 - theta_sq / 48 + theta_sq * theta_sq / 3840
    half_sinc = torch.where(small, series, torch.sin(0.5 * theta) / theta)
    w = torch.where(small, 1 - theta_sq / 8 + theta_sq * theta_sq / 384, torch.cos(0.5 * theta))
    return torch.cat([w, v * half_sinc], dim=-1)


def rotvec_to_matrix(rotvec) -> torch.Tensor:
    """Rotation matrix ``exp([v]×)`` of rotation vectors (axis × angle in radians).

    Parameters
    ----------
    rotvec
        ``(..., 3)`` rotation vectors ``θ n``, θ in radians, n a unit axis ``(x, y, z)``.

    Returns
    -------
    ``(..., 3, 3)`` active rotation matrix by θ about n (right hand), equal to
    ``scipy.spatial.transform.Rotation.from_rotvec(v).as_matrix()``. Exact at θ = 0, any θ
    (including θ >= π) accepted.
    """
    return quaternion_to_matrix(rotvec_to_quaternion(rotvec))


def matrix_to_rotvec(matrix) -> torch.Tensor:
    """Rotation vector (axis × angle in radians) of rotation matrices, the inverse of :func:`rotvec_to_matrix`.

    Parameters
    ----------
    matrix
        ``(..., 3, 3)`` rotation matrices.

    Returns
    -------
    ``(..., 3)`` vectors ``θ n`` with θ in [0, π]. At θ = π, where ``v`` and ``-v`` are the same
    rotation, the vector whose first non-zero component is positive is returned.

    Notes
    -----
    Goes through the canonical quaternion (w >= 0) of :func:`matrix_to_quaternion`:
    ``θ = 2 atan2(|u|, w)``, ``v = u θ / |u|`` with a series for ``θ / |u|`` at small angles;
    accurate near 0 and near π, unlike formulas based on ``arccos((tr R - 1) / 2)``.
    """
    q = matrix_to_quaternion(matrix)
    w, u = q[..., :1], q[..., 1:]
    n_sq = (u * u).sum(dim=-1, keepdim=True)
    small = n_sq < 1e-6
    n = torch.sqrt(torch.where(small, torch.ones_like(n_sq), n_sq))
    # θ/|u| = 2 atan(t)/(t w) with t = |u|/w = (2/w)(1 - t²/3 + t⁴/5) for small t (w ≈ 1 there)
    t_sq = n_sq / (w * w).clamp_min(0.25)
    series = (2 / w.clamp_min(0.5)) * (1 - t_sq / 3 + t_sq * t_sq / 5)
    scale = torch.where(small, series, 2 * torch.atan2(n, w) / n)
    return u * scale


def axis_angle_to_matrix(axis, angle_deg) -> torch.Tensor:
    """Active rotation matrix by ``angle_deg`` about ``axis`` (right-hand rule).

    Parameters
    ----------
    axis
        ``(..., 3)`` rotation axes ``(x, y, z)``, normalised here (must be non-zero).
    angle_deg
        ``(...)`` angles in degrees; broadcasts against ``axis[..., 0]``.

    Returns
    -------
    ``(..., 3, 3)`` matrix R with ``R v`` = v rotated counter-clockwise by the angle when seen
    from the tip of the axis. Note that ``axis_angle_to_matrix(e_z, t)`` is RELION's
    ``Rz(-t)``, since RELION's elementary rotations are passive (``relion_euler_to_matrix``).
    """
    a = as_float_tensor(axis, name="axis", last_dims=(3,))
    angle = as_float_tensor(angle_deg, name="angle_deg")
    dtype = torch.promote_types(a.dtype, angle.dtype)
    a, angle = a.to(dtype), angle.to(dtype)
    norm = torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise InputError("axis must be non-zero")
    return rotvec_to_matrix(a / norm * torch.deg2rad(angle)[..., None])
