"""Particle poses for simulation: uniform on SO(3), preferred orientation, tilted-stage collection.

Poses are RELION Euler angles ``(rot, tilt, psi)`` in degrees, ``(n, 3)``, and in-plane shifts
``(n, 2)`` in Å ordered ``(x, y)`` (``rlnOriginXAngst/YAngst``: ``image(x) = P(x + origin)``).
Conventions: docs/conventions.md, "Rotations and projection" and "Shifts".

Geometry of a tilted-stage collection
-------------------------------------
The ice layer (the specimen plane) holds particles at orientations ``A_ice`` drawn as for an
untilted grid (uniform or preferred). The stage is tilted by ``α = stage_tilt_deg`` about an
in-plane axis ``u = (cos φ, sin φ, 0)`` of the image, ``φ = tilt_axis_deg`` measured from the
image x axis. The view-frame matrix of each particle is then ``A = R_u(α) · A_ice``, with
``R_u(α)`` the right-handed rotation by α about ``u``: the viewing directions (``Aᵀ e_z``) of a
preferred view spread out into a cone of half-angle α, which is why tilting helps.

Take the view-frame ``+z`` to point towards the electron source. A specimen point at in-plane
distance ``t`` along ``w = (−sin φ, cos φ, 0)`` (perpendicular to the tilt axis) is carried by
``R_u(α)`` to height ``t sin α`` and appears at image distance ``d = t cos α``. A particle whose
projected micrograph position is ``r`` (Å, from the micrograph centre, where the tilted plane
meets the focal plane) thus sits ``h = (r · w) tan α`` above the focal plane, further from
focus: its defocus is larger by ``Δf = (r · w) tan α`` (positive = more underfocus, RELION's
sign). Particles on the tilt axis keep the nominal defocus.
"""

from __future__ import annotations

import math

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.rotations import matrix_to_relion_euler, random_relion_euler, relion_euler_to_matrix


def uniform_poses(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 3)`` RELION Euler angles (degrees) uniform on SO(3).

    rot, psi ~ U(-180, 180), tilt = arccos(U(-1, 1)) (docs/conventions.md).
    """
    _check_count(n)
    return as_tensor(random_relion_euler(n, generator=generator), dtype=torch.float32)


def direction_to_rot_tilt(directions) -> torch.Tensor:
    """``(..., 2)`` ``(rot, tilt)`` in degrees of unit viewing directions ``(..., 3)`` ``(x, y, z)``.

    Inverse of ``viewing_direction``: ``d = (cos rot sin tilt, sin rot sin tilt, cos tilt)``.
    """
    d = as_tensor(directions)
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    rot = torch.rad2deg(torch.atan2(d[..., 1], d[..., 0]))
    tilt = torch.rad2deg(torch.acos(torch.clamp(d[..., 2], -1.0, 1.0)))
    return torch.stack([rot, tilt], dim=-1)


def rot_tilt_to_direction(rot_tilt_deg) -> torch.Tensor:
    """``(..., 3)`` unit viewing direction ``Aᵀ e_z`` of ``(..., 2)`` ``(rot, tilt)`` in degrees."""
    a = torch.deg2rad(as_tensor(rot_tilt_deg))
    rot, tilt = a[..., 0], a[..., 1]
    return torch.stack([torch.cos(rot) * torch.sin(tilt), torch.sin(rot) * torch.sin(tilt), torch.cos(tilt)], dim=-1)


def kappa_from_spread_deg(spread_deg: float) -> float:
    """Von Mises–Fisher concentration ``κ = 1 / σ²`` of a spread ``σ`` given in degrees.

    For large κ the deviation of a vMF direction from its mean is, along each of the two tangent
    axes, normal with standard deviation ``σ = 1/√κ`` (radians); the RMS angle to the mean is
    ``√2 σ`` (Fisher, Lewis & Embleton 1987, §4.4).
    """
    if not spread_deg > 0:
        raise InputError(f"view spread must be positive (degrees), got {spread_deg}")
    return 1.0 / math.radians(spread_deg) ** 2


def sample_von_mises_fisher(mean_directions, kappa: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One von Mises–Fisher direction on S² about each mean direction.

    Parameters
    ----------
    mean_directions
        ``(n, 3)`` mean directions (normalised here).
    kappa
        Concentration ``κ ≥ 0`` (0: uniform on the sphere).

    Returns
    -------
    ``(n, 3)`` unit vectors. The cosine to the mean is drawn by inverting its CDF,
    ``w = 1 + log(u + (1 − u) e^{−2κ}) / κ`` (Wood 1994, exact on S²), the azimuth uniformly.

    References
    ----------
    A. T. A. Wood, "Simulation of the von Mises Fisher distribution", Commun. Stat. Simul.
    Comput. 23, 157–164 (1994).
    """
    if not kappa >= 0:
        raise InputError(f"concentration kappa must be >= 0, got {kappa}")
    mu = as_tensor(mean_directions, dtype=torch.float64)
    mu = mu / torch.linalg.vector_norm(mu, dim=-1, keepdim=True)
    n = mu.shape[0]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    if kappa < 1e-8:
        w = 2 * u - 1
    else:
        w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    w = torch.clamp(w, -1.0, 1.0)
    # orthonormal tangent basis (e1, e2) about each mean
    helper = torch.where((mu[:, 0].abs() < 0.9)[:, None], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                         torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    e1 = torch.linalg.cross(mu, helper)
    e1 = e1 / torch.linalg.vector_norm(e1, dim=-1, keepdim=True)
    e2 = torch.linalg.cross(mu, e1)
    s = torch.sqrt(torch.clamp(1 - w**2, min=0.0))
    d = w[:, None] * mu + s[:, None] * (torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2)
    return d.to(torch.float32)


def preferred_orientation_poses(n: int, views_rot_tilt_deg, *, kappa: float | None = None,
                                spread_deg: float | None = None, weights=None,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 3)`` RELION Euler angles concentrated about preferred viewing directions.

    Each particle picks a preferred view (probabilities ``weights``, default equal), draws its
    viewing direction from a von Mises–Fisher distribution about it, and an in-plane angle
    psi ~ U(-180, 180).

    Parameters
    ----------
    views_rot_tilt_deg
        ``(m, 2)`` preferred views as ``(rot, tilt)`` in degrees (direction
        ``(cos rot sin tilt, sin rot sin tilt, cos tilt)`` in map coordinates).
    kappa, spread_deg
        Concentration, or the spread σ in degrees (``κ = 1/σ²``, see
        :func:`kappa_from_spread_deg`); give exactly one.
    weights
        ``(m,)`` non-negative relative frequencies of the views.
    """
    _check_count(n)
    if (kappa is None) == (spread_deg is None):
        raise InputError("give exactly one of kappa and spread_deg for preferred orientations")
    if spread_deg is not None:
        kappa = kappa_from_spread_deg(spread_deg)
    views = as_tensor(views_rot_tilt_deg, dtype=torch.float64).reshape(-1, 2)
    probs = _normalised_weights(weights, views.shape[0], "view")
    which = torch.multinomial(probs, n, replacement=True, generator=generator)
    means = rot_tilt_to_direction(views)[which]
    dirs = sample_von_mises_fisher(means, kappa, generator=generator)
    rot_tilt = direction_to_rot_tilt(dirs.double())
    psi = torch.rand(n, generator=generator, dtype=torch.float64) * 360.0 - 180.0
    return torch.cat([rot_tilt, psi[:, None]], dim=-1).to(torch.float32)


def sample_shifts(n: int, *, sigma_A: float | None = None, max_A: float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` in-plane shifts ``(x, y)`` in Å (``rlnOriginXAngst/YAngst``).

    ``sigma_A``: each component normal with that standard deviation; ``max_A``: each component
    uniform in ``[-max_A, max_A]``; neither: zeros.
    """
    _check_count(n)
    if sigma_A is not None and max_A is not None:
        raise InputError("give at most one of a Gaussian shift sigma and a uniform shift range")
    if sigma_A is not None:
        if sigma_A < 0:
            raise InputError(f"shift sigma must be >= 0 Å, got {sigma_A}")
        return sigma_A * torch.randn(n, 2, generator=generator)
    if max_A is not None:
        if max_A < 0:
            raise InputError(f"shift range must be >= 0 Å, got {max_A}")
        return (2 * torch.rand(n, 2, generator=generator) - 1) * max_A
    return torch.zeros(n, 2)


def sample_micrograph_positions(n: int, *, micrograph_size_A: float,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` particle positions ``(x, y)`` in Å, uniform on a square micrograph of side
    ``micrograph_size_A`` and measured from its centre."""
    _check_count(n)
    if not micrograph_size_A > 0:
        raise InputError(f"micrograph size must be positive (Å), got {micrograph_size_A}")
    return (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5).to(torch.float32) * micrograph_size_A


def stage_tilt_matrix(stage_tilt_deg: float, tilt_axis_deg: float = 0.0) -> torch.Tensor:
    """``(3, 3)`` right-handed rotation ``R_u(α)`` by the stage tilt about ``u = (cos φ, sin φ, 0)``."""
    a, phi = math.radians(stage_tilt_deg), math.radians(tilt_axis_deg)
    u = torch.tensor([math.cos(phi), math.sin(phi), 0.0], dtype=torch.float64)
    k = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def tilted_stage_poses(euler_deg, positions_A, *, stage_tilt_deg: float,
                       tilt_axis_deg: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Poses and defocus offsets of particles imaged on a tilted stage (module docstring).

    Parameters
    ----------
    euler_deg
        ``(n, 3)`` orientations of the particles in the ice layer (untilted frame).
    positions_A
        ``(n, 2)`` projected positions ``(x, y)`` on the micrograph in Å from its centre.
    stage_tilt_deg, tilt_axis_deg
        Tilt angle α and the direction φ of the tilt axis from the image x axis (degrees).

    Returns
    -------
    (euler_deg, defocus_offset_A)
        ``(n, 3)`` Euler angles of ``A = R_u(α) · A_ice`` and ``(n,)`` defocus offsets
        ``(r · w) tan α`` in Å, ``w = (−sin φ, cos φ)``, to add to defocus U and V.
    """
    if not -90 < stage_tilt_deg < 90:
        raise InputError(f"stage tilt must lie in (-90, 90) degrees, got {stage_tilt_deg}")
    a_ice = relion_euler_to_matrix(as_tensor(euler_deg, dtype=torch.float64))
    a_view = stage_tilt_matrix(stage_tilt_deg, tilt_axis_deg) @ a_ice
    euler = matrix_to_relion_euler(a_view).to(torch.float32)
    pos = as_tensor(positions_A, dtype=torch.float64)
    phi = math.radians(tilt_axis_deg)
    along_w = -math.sin(phi) * pos[:, 0] + math.cos(phi) * pos[:, 1]
    offset = along_w * math.tan(math.radians(stage_tilt_deg))
    return euler, offset.to(torch.float32)


def _check_count(n: int) -> None:
    if int(n) != n or n <= 0:
        raise InputError(f"number of particles must be a positive integer, got {n}")


def _normalised_weights(weights, m: int, what: str) -> torch.Tensor:
    if weights is None:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    w = as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.numel() != m:
        raise InputError(f"{w.numel()} {what} weights given for {m} {what}s")
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"{what} weights must be non-negative with a positive sum, got {w.tolist()}")
    return w / w.sum()
