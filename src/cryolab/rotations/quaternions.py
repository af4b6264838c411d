"""Unit quaternions ``(w, x, y, z)`` (scalar first) and their rotation matrices.

A unit quaternion ``q = (cos(θ/2), sin(θ/2) n)`` stands for the active rotation by θ about the
unit axis n (right hand): ``R(q) v = q v q*``. This is SciPy's ``Rotation.from_quat`` with the
components reordered (SciPy stores ``(x, y, z, w)``). q and -q are the same rotation; functions
that return a quaternion of a rotation pick the canonical sign ``w >= 0`` (first non-zero
component positive when ``w = 0``).

Which rotation a quaternion means in cryo-EM terms is the caller's choice: to store RELION's A
as a quaternion use ``matrix_to_quaternion(A)``; ``quaternion_to_matrix`` then gives A back.

References
----------
Shepperd, "Quaternion from rotation matrix", J. Guidance and Control 1 (1978) 223-224.
Kuipers, *Quaternions and Rotation Sequences*, Princeton (1999), ch. 5.
"""

from __future__ import annotations

import torch

from cryolab.errors import InputError
from cryolab.rotations._common import as_float_tensor


def canonical_quaternion_sign(q) -> torch.Tensor:
    """Flip quaternions so that ``w >= 0``; at ``w == 0`` the first non-zero component is positive.

    Parameters
    ----------
    q
        ``(..., 4)`` quaternions ``(w, x, y, z)``.

    Returns
    -------
    ``(..., 4)`` the same rotations with the canonical sign (as SciPy's ``canonical=True``).
    """
    q = as_float_tensor(q, name="q", last_dims=(4,))
    w, x, y, z = q.unbind(-1)
    sign = torch.where(
        w != 0,
        torch.sign(w),
        torch.where(x != 0, torch.sign(x), torch.where(y != 0, torch.sign(y), torch.sign(z))),
    )
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign[..., None]


def quaternion_to_matrix(q) -> torch.Tensor:
    """Rotation matrix of (not necessarily normalised) quaternions.

    Parameters
    ----------
    q
        ``(..., 4)`` quaternions ``(w, x, y, z)``; they are normalised first.

    Returns
    -------
    ``(..., 3, 3)`` matrix R with ``R v = q v q*`` (active rotation), equal to SciPy's
    ``Rotation.from_quat([x, y, z, w]).as_matrix()``.
    """
    q = as_float_tensor(q, name="q", last_dims=(4,))
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        torch.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], dim=-1),
        torch.stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], dim=-1),
        torch.stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_quaternion(matrix) -> torch.Tensor:
    """Unit quaternion of rotation matrices (Shepperd's method), canonical sign ``w >= 0``.

    Parameters
    ----------
    matrix
        ``(..., 3, 3)`` rotation matrices.

    Returns
    -------
    ``(..., 4)`` quaternions ``(w, x, y, z)`` with ``quaternion_to_matrix(q) == matrix``.
    ``|w| <= 8 eps`` (rounding noise of a half turn) is set to 0 before the sign is chosen, so
    half turns get the axis whose first non-zero component is positive.

    Notes
    -----
    The four numbers ``4w², 4x², 4y², 4z²`` are linear in the diagonal (``1 ± m00 ± m11 ±
    m22``); the largest of them (always >= 1) gives one component by a square root and the
    others from the off-diagonal sums and differences divided by it, so no division by a small
    number happens at any angle, including 180°.
    """
    m = as_float_tensor(matrix, name="matrix", last_dims=(3, 3))
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )  # 4 w², 4 x², 4 y², 4 z²
    # candidate k holds 4 q_k q: exact up to the common factor 4 q_k
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, four_sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    best = four_sq.argmax(dim=-1, keepdim=True)  # (..., 1)
    chosen = torch.gather(candidates, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = chosen / torch.linalg.vector_norm(chosen, dim=-1, keepdim=True)
    # a half turn has w = 0 exactly; rounding leaves ±eps there, which would pick the sign of
    # the axis at random. Snap such w to 0 so the canonical sign follows the axis.
    w_noise = q[..., :1].abs() <= 8 * torch.finfo(q.dtype).eps
    q = torch.cat([torch.where(w_noise, torch.zeros_like(q[..., :1]), q[..., :1]), q[..., 1:]], dim=-1)
    return canonical_quaternion_sign(q)


def quaternion_multiply(q1, q2) -> torch.Tensor:
    """Hamilton product ``q1 q2``, so that ``R(q1 q2) = R(q1) R(q2)``.

    Parameters
    ----------
    q1, q2
        ``(..., 4)`` quaternions ``(w, x, y, z)``; leading dimensions broadcast.

    Returns
    -------
    ``(..., 4)`` product, not normalised and not sign-canonicalised (the sign carries
    information when products are chained, e.g. for interpolation).
    """
    a = as_float_tensor(q1, name="q1", last_dims=(4,))
    b = as_float_tensor(q2, name="q2", last_dims=(4,))
    a, b = torch.broadcast_tensors(a, b)
    w1, x1, y1, z1 = a.unbind(-1)
    w2, x2, y2, z2 = b.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def quaternion_conjugate(q) -> torch.Tensor:
    """Conjugate ``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion; shape ``(..., 4)``."""
    q = as_float_tensor(q, name="q", last_dims=(4,))
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def quaternion_rotate_points(points, q) -> torch.Tensor:
    """Rotate points by unit quaternions: ``q p q*``, the same as ``quaternion_to_matrix(q) @ p``.

    Parameters
    ----------
    points
        ``(..., N, 3)`` vectors ``(x, y, z)``.
    q
        ``(..., 4)`` unit quaternions ``(w, x, y, z)``; its leading dimensions broadcast
        against those of ``points`` (without N). Not renormalised.

    Returns
    -------
    ``(..., N, 3)`` rotated points.
    """
    p = as_float_tensor(points, name="points", last_dims=(3,))
    q = as_float_tensor(q, name="q", last_dims=(4,))
    if p.ndim < 2:
        raise InputError(f"points must have shape (..., N, 3), got {tuple(p.shape)}")
    dtype = torch.promote_types(p.dtype, q.dtype)
    q = q[..., None, :].to(dtype)
    w, u = q[..., :1], q[..., 1:]
    shape = torch.broadcast_shapes(u.shape, p.shape)
    u, p = u.expand(shape), p.to(dtype).expand(shape)
    # v' = v + 2 w (u × v) + 2 u × (u × v)
    t = 2 * torch.linalg.cross(u, p, dim=-1)
    return p + w * t + torch.linalg.cross(u, t, dim=-1)
