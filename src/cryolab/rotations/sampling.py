"""Random and gridded samples of SO(3), and in-plane angle grids for 2D classification.

Uniform ("Haar") sampling of SO(3) is uniform sampling of unit quaternions on S³, or
equivalently RELION Euler angles with ``rot, psi ~ U(-180°, 180°)`` and ``tilt = arccos(U(-1,
1))`` (docs/conventions.md). Grids follow RELION's HEALPix sampling or the Hopf-fibration grid of
Yershova et al.; both have ``72 · 8^order`` points.

References
----------
Shoemake, "Uniform random rotations", Graphics Gems III (1992) 124-132.
Górski et al., "HEALPix", Astrophys. J. 622 (2005) 759-771.
Yershova, Jain, LaValle & Mitchell, "Generating uniform incremental grids on SO(3) using the
Hopf fibration", Int. J. Robotics Research 29 (2010) 801-812.
Scheres, "RELION", J. Struct. Biol. 180 (2012) 519-530 (``src/healpix_sampling.cpp``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryolab.errors import InputError
from cryolab.rotations._common import wrap_degrees
from cryolab.rotations.euler import inplane_rotation_matrix, relion_euler_to_matrix
from cryolab.rotations.quaternions import canonical_quaternion_sign, quaternion_to_matrix

_GRID_METHODS = ("healpix", "hopf")


def _random_device(generator: torch.Generator | None, device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _check_count(n) -> int:
    if int(n) != n or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


def random_quaternions(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Unit quaternions uniform on S³ (hence rotations uniform on SO(3)), canonical sign w >= 0.

    Parameters
    ----------
    n
        Number of samples.
    generator
        Seeded ``torch.Generator`` for reproducible draws; the draw happens on its device.
    dtype, device
        Output dtype and device (the draw itself is made in float64).

    Returns
    -------
    ``(n, 4)`` quaternions ``(w, x, y, z)``: normalised standard-normal 4-vectors, which are
    uniform on the sphere S³ by rotational symmetry of the Gaussian.
    """
    n = _check_count(n)
    draw_device = _random_device(generator, device)
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=draw_device)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return canonical_quaternion_sign(q).to(dtype=dtype, device=device or draw_device)


def random_rotations(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Rotation matrices uniform on SO(3) (Haar measure), from uniform unit quaternions.

    Parameters
    ----------
    n
        Number of samples.
    generator
        Seeded ``torch.Generator``: the same seed gives the same rotations.
    dtype, device
        Output dtype and device.

    Returns
    -------
    ``(n, 3, 3)`` rotation matrices. Their rotation angles θ have density ``(1 - cos θ) / π`` on
    [0, π] and ``R v`` is uniform on the sphere for any fixed unit v.
    """
    q = random_quaternions(n, generator=generator, dtype=torch.float64, device=device)
    return quaternion_to_matrix(q).to(dtype=dtype)


def random_relion_euler(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """RELION Euler angles of rotations uniform on SO(3).

    Parameters
    ----------
    n
        Number of samples.
    generator
        Seeded ``torch.Generator`` for reproducible draws.
    dtype, device
        Output dtype and device.

    Returns
    -------
    ``(n, 3)`` ``[rot, tilt, psi]`` in degrees: rot, psi uniform on (-180, 180], ``tilt =
    arccos(u)`` with u uniform on (-1, 1] (uniform viewing directions on the sphere); the Haar
    measure in Euler coordinates is ``sin(tilt) d rot d tilt d psi``.
    """
    n = _check_count(n)
    draw_device = _random_device(generator, device)
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64, device=draw_device)
    rot = 180.0 - 360.0 * u[:, 0]
    tilt = torch.rad2deg(torch.arccos(1.0 - 2.0 * u[:, 1]))
    psi = 180.0 - 360.0 * u[:, 2]
    return torch.stack([rot, tilt, psi], dim=-1).to(dtype=dtype, device=device or draw_device)


def healpix_order_for_step(step_deg: float) -> int:
    """HEALPix order whose SO(3) grid has an angular step closest to ``step_deg`` (RELION's rule).

    RELION's order ``k`` has ``nside = 2^k`` and angular step ``360 / (6 · 2^k) = 60° / 2^k``
    (order 2 = 15°, 3 = 7.5°, 4 = 3.75°, 5 = 1.875°, ...); the order returned is
    ``max(0, round(log2(60 / step_deg)))``, as the sampling menu of RELION maps 7.5° -> 3,
    3.7° -> 4, 1.8° -> 5, 0.9° -> 6.
    """
    step = float(step_deg)
    if not step > 0:
        raise InputError(f"step_deg must be positive, got {step_deg!r}")
    return max(0, int(round(math.log2(60.0 / step))))


def so3_grid_euler(
    step_deg: float, *, method: str = "healpix", dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """RELION Euler angles of a deterministic grid on SO(3) with about ``step_deg`` spacing.

    Parameters
    ----------
    step_deg
        Wanted angular step in degrees; the grid uses the HEALPix order of
        :func:`healpix_order_for_step`, whose actual step is ``60° / 2^order``.
    method
        ``"healpix"``: RELION's sampling (``HealpixSampling::setOrientations``): viewing
        directions (rot, tilt) = (φ, θ) of the ``12 nside²`` HEALPix pixel centres (NESTED
        order, ``healpy.pix2ang``), each combined with ``6 nside`` in-plane angles
        ``psi = k · 60° / nside``, k = 0 … 6 nside - 1.
        ``"hopf"``: the Hopf-fibration grid of Yershova et al. (2010) on the same HEALPix
        directions: fibre angles ``ψ_k = (k + 1/2) · 60° / nside`` and ``psi = ψ_k - rot``, so
        that the in-plane angle is counted from a frame that does not twist with rot (near the
        poles Euler rot and psi become redundant). As a set, ``Aᵀ`` runs exactly over the
        rotations of Yershova's quaternions ``(x1, x2, x3, x4) = (cos(θ/2) cos(ψ/2),
        cos(θ/2) sin(ψ/2), sin(θ/2) cos(φ + ψ/2), sin(θ/2) sin(φ + ψ/2))`` read as
        ``(w, z, y, x)``: the same grid up to a fixed isometry of SO(3).
    dtype, device
        Output dtype and device.

    Returns
    -------
    ``(M, 3)`` angles ``[rot, tilt, psi]`` in degrees, ``M = 72 · 8^order``, ordered
    direction-major (all psi of the first direction first), rot and psi wrapped into
    (-180, 180] (RELION keeps psi in [0, 360); the rotations are the same).

    Notes
    -----
    Coverage (covering radius: the largest geodesic distance from a rotation to its nearest grid
    point, estimated with 20000 uniform random rotations; float64):

    ====================  ===========  ========  ======
    order (step)          points       healpix   hopf
    ====================  ===========  ========  ======
    0 (60°)               72           ~51°      ~55°
    1 (30°)               576          ~27°      ~27°
    2 (15°)               4608         ~12.3°    ~12.8°
    ====================  ===========  ========  ======

    so from order 1 on every rotation lies within one nominal step of the grid, and the mean
    distance to the nearest point is about step / 2.1. Both grids are deterministic; neither
    removes symmetry-equivalent points (RELION does that for point groups other than C1).
    """
    if method not in _GRID_METHODS:
        raise InputError(f"method must be one of {_GRID_METHODS}, got {method!r}")
    import healpy  # imported here: only the grids need it

    order = healpix_order_for_step(step_deg)
    nside = 2**order
    theta, phi = healpy.pix2ang(nside, np.arange(12 * nside * nside), nest=True)
    rot = np.degrees(phi)[:, None]
    tilt = np.degrees(theta)[:, None]
    n_psi = 6 * nside
    psi_step = 360.0 / n_psi
    if method == "healpix":
        psi = (np.arange(n_psi) * psi_step)[None, :] + 0.0 * rot
    else:
        psi = ((np.arange(n_psi) + 0.5) * psi_step)[None, :] - rot
    angles = np.stack(np.broadcast_arrays(rot, tilt, psi), axis=-1).reshape(-1, 3)
    out = torch.from_numpy(angles)
    out = torch.stack([wrap_degrees(out[:, 0]), out[:, 1], wrap_degrees(out[:, 2])], dim=-1)
    return out.to(dtype=dtype, device=device)


def so3_grid(
    step_deg: float, *, method: str = "healpix", dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Rotation matrices A (RELION convention) of the SO(3) grid of :func:`so3_grid_euler`.

    Parameters
    ----------
    step_deg, method, dtype, device
        As for :func:`so3_grid_euler` (``"healpix"`` or ``"hopf"``).

    Returns
    -------
    ``(M, 3, 3)`` matrices ``relion_euler_to_matrix(so3_grid_euler(step_deg, method=method))``,
    computed in float64 and cast to ``dtype``. See :func:`so3_grid_euler` for the coverage.
    """
    angles = so3_grid_euler(step_deg, method=method, dtype=torch.float64)
    return relion_euler_to_matrix(angles).to(dtype=dtype, device=device)


def inplane_angles(step_deg: float, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """In-plane angles psi for 2D classification, RELION's rule.

    Parameters
    ----------
    step_deg
        Wanted step; as in RELION, ``K = ceil(360 / step_deg)`` angles are used and the actual
        step is ``360 / K`` (never coarser than asked).

    Returns
    -------
    ``(K,)`` angles ``k · 360 / K`` in degrees, wrapped into (-180, 180] (order kept: 0,
    step, …, then the negative angles).
    """
    step = float(step_deg)
    if not step > 0:
        raise InputError(f"step_deg must be positive, got {step_deg!r}")
    count = max(1, math.ceil(360.0 / step - 1e-9))
    angles = torch.arange(count, dtype=torch.float64) * (360.0 / count)
    return wrap_degrees(angles).to(dtype=dtype, device=device)


def inplane_rotations(step_deg: float, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """2D rotation matrices of :func:`inplane_angles` (see :func:`inplane_rotation_matrix`).

    Returns
    -------
    ``(K, 2, 2)`` matrices ``[[cos psi, sin psi], [-sin psi, cos psi]]`` acting on ``(x, y)``.
    """
    psi = inplane_angles(step_deg, dtype=torch.float64)
    return inplane_rotation_matrix(psi).to(dtype=dtype, device=device)
