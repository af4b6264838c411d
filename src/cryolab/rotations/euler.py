"""RELION Euler angles (rot, tilt, psi) and the rotation matrix A they define.

Convention (docs/conventions.md, "Rotations and projection"): ``A(rot, tilt, psi) = Rz(psi) ·
Ry(tilt) · Rz(rot)`` with ``Rz(t) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` and ``Ry(t) = [[c, 0,
-s], [0, 1, 0], [s, 0, c]]``. A maps map coordinates ``(x, y, z)`` into the view frame; it equals
``scipy.spatial.transform.Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True)
.as_matrix().T``. The viewing direction in map coordinates is ``Aᵀ e_z = (cos rot sin tilt,
sin rot sin tilt, cos tilt)``.

References
----------
RELION ``src/euler.cpp`` (``Euler_angles2matrix``, ``Euler_matrix2angles``);
Scheres, J. Struct. Biol. 180 (2012) 519-530.
"""

from __future__ import annotations

import torch

from cryolab.errors import InputError
from cryolab.rotations._common import as_float_tensor, wrap_degrees, wrap_radians


def relion_euler_to_matrix(angles_deg) -> torch.Tensor:
    """Rotation matrix A of RELION Euler angles.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` angles ``[rot, tilt, psi]`` in degrees (any range).

    Returns
    -------
    ``(..., 3, 3)`` matrix ``A = Rz(psi) · Ry(tilt) · Rz(rot)`` (RELION's
    ``Euler_angles2matrix``), in the dtype of the input (float32 for numpy input, float64 kept
    for float64 torch tensors). ``A @ x_map = x_view``.

    Notes
    -----
    Equal to ``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T``: the
    three passive elementary rotations of RELION are the transpose of SciPy's active intrinsic
    Z-Y-Z rotation.
    """
    angles = as_float_tensor(angles_deg, name="angles_deg", last_dims=(3,))
    rot, tilt, psi = torch.deg2rad(angles).unbind(-1)
    ca, sa = torch.cos(rot), torch.sin(rot)
    cb, sb = torch.cos(tilt), torch.sin(tilt)
    cg, sg = torch.cos(psi), torch.sin(psi)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], dim=-1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], dim=-1),
        torch.stack([sc, ss, cb], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_relion_euler(matrix) -> torch.Tensor:
    """RELION Euler angles of rotation matrices, the inverse of :func:`relion_euler_to_matrix`.

    Parameters
    ----------
    matrix
        ``(..., 3, 3)`` rotation matrices A (view-from-map, RELION convention).

    Returns
    -------
    ``(..., 3)`` angles ``[rot, tilt, psi]`` in degrees with ``tilt`` in [0, 180] and ``rot``,
    ``psi`` in (-180, 180].

    Notes
    -----
    Away from gimbal lock the angles are RELION's ``Euler_matrix2angles``: ``tilt =
    atan2(sqrt(A02² + A12²), A22)``, ``rot = atan2(A21, A20)``, ``psi = atan2(A12, -A02)``; then
    the sum ``rot + psi`` (when ``cos tilt >= 0``) or the difference ``psi - rot`` (when
    ``cos tilt < 0``) is corrected from the well-conditioned 2x2 block
    (``A00 + A11 = (1 + cos tilt) cos(rot + psi)`` and friends), so that the matrix round trip
    stays accurate at small ``sin tilt``.

    At gimbal lock (``sin tilt <= 16 eps`` of the dtype, RELION's threshold for float32) only
    ``rot + psi`` (tilt 0) or ``psi - rot`` (tilt 180) is defined; as RELION does, the whole
    in-plane angle goes into ``psi`` and ``rot = 0``.
    """
    m = as_float_tensor(matrix, name="matrix", last_dims=(3, 3))
    a00, a01, a02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    a10, a11, a12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    a20, a21, a22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]

    sin_tilt = torch.hypot(a02, a12)
    tilt = torch.atan2(sin_tilt, a22)
    rot_raw = torch.atan2(a21, a20)
    psi_raw = torch.atan2(a12, -a02)
    # (1 + cos tilt) (cos, sin)(rot + psi) and (1 - cos tilt) (cos, sin)(psi - rot)
    sum_angle = torch.atan2(a01 - a10, a00 + a11)
    diff_angle = torch.atan2(a01 + a10, a11 - a00)

    upper = a22 >= 0  # tilt <= 90: rot + psi is well conditioned, else psi - rot
    sum_correction = wrap_radians(sum_angle - (rot_raw + psi_raw))
    diff_correction = wrap_radians(diff_angle - (psi_raw - rot_raw))
    rot = torch.where(upper, rot_raw + 0.5 * sum_correction, rot_raw - 0.5 * diff_correction)
    psi = torch.where(upper, psi_raw + 0.5 * sum_correction, psi_raw + 0.5 * diff_correction)

    gimbal = sin_tilt <= 16 * torch.finfo(m.dtype).eps
    zero = torch.zeros_like(tilt)
    tilt = torch.where(gimbal, torch.where(upper, zero, zero + torch.pi), tilt)
    psi = torch.where(gimbal, torch.where(upper, sum_angle, diff_angle), psi)
    rot = torch.where(gimbal, zero, rot)

    angles = torch.rad2deg(torch.stack([rot, tilt, psi], dim=-1))
    return torch.stack(
        [wrap_degrees(angles[..., 0]), angles[..., 1], wrap_degrees(angles[..., 2])], dim=-1
    )


def viewing_direction(angles_deg) -> torch.Tensor:
    """Unit viewing direction ``Aᵀ e_z`` in map coordinates of RELION Euler angles.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` ``[rot, tilt, psi]`` in degrees, or ``(..., 2)`` ``[rot, tilt]``.

    Returns
    -------
    ``(..., 3)`` vector ``(cos rot sin tilt, sin rot sin tilt, cos tilt)`` ordered ``(x, y, z)``:
    the direction, in the map, along which the projection integrates.
    """
    angles = as_float_tensor(angles_deg, name="angles_deg")
    if angles.ndim < 1 or angles.shape[-1] not in (2, 3):
        raise InputError(f"angles_deg must have shape (..., 3) or (..., 2), got {tuple(angles.shape)}")
    rot, tilt = torch.deg2rad(angles[..., 0]), torch.deg2rad(angles[..., 1])
    return torch.stack(
        [torch.cos(rot) * torch.sin(tilt), torch.sin(rot) * torch.sin(tilt), torch.cos(tilt)], dim=-1
    )


def inplane_rotation_matrix(psi_deg) -> torch.Tensor:
    """2D rotation matrix of an in-plane angle psi, RELION's 2D convention.

    Parameters
    ----------
    psi_deg
        ``(...)`` in-plane angle(s) in degrees.

    Returns
    -------
    ``(..., 2, 2)`` matrix ``[[cos psi, sin psi], [-sin psi, cos psi]]``: the upper-left block of
    ``relion_euler_to_matrix([0, 0, psi])``, acting on ``(x, y)`` vectors. Like the 3D A it
    maps reference (class-average) coordinates into the rotated image frame, so a 2D image
    with angle psi is ``image(x) = reference(Rᵀ x)``.
    """
    psi = torch.deg2rad(as_float_tensor(psi_deg, name="psi_deg"))
    c, s = torch.cos(psi), torch.sin(psi)
    return torch.stack([torch.stack([c, s], dim=-1), torch.stack([-s, c], dim=-1)], dim=-2)
