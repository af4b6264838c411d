"""Directional (conical) FSC: resolution along each direction, to expose preferred orientation.

A map reconstructed from particles with a preferred orientation is sampled unevenly in Fourier
space: along the missing directions its half maps share less signal. The conical FSC sums the
FSC's numerator and denominators only over Fourier samples within a cone of half-angle ``α``
around a direction ``d`` (both ``d`` and ``-d``: a real map's transform is Hermitian), giving one
curve and one resolution per direction. Their spread, and the sphericity of the surface they
trace, summarise the anisotropy.

Sums follow :func:`cryolab.validate.fsc` (rfft half grid, shells ``round(|k| N)``); the DC
sample belongs to every cone.

References
----------
Y. Z. Tan, P. R. Baldwin, J. H. Davis, J. R. Williamson, C. S. Potter, B. Carragher & D. Lyumkis,
"Addressing preferred specimen orientation in single-particle cryo-EM through tilting",
Nat. Methods 14, 793-796 (2017) (3D FSC and sphericity);
H. Wadell, "Volume, shape and roundness of quartz particles", J. Geol. 43, 250-280 (1935)
(sphericity ``π^(1/3) (6V)^(2/3) / A``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid, shell_index
from cryolab.validate.fsc import _check_pair, fsc_resolution_A

__all__ = ["fibonacci_directions", "DirectionalFSC", "directional_fsc", "sphericity"]


def fibonacci_directions(n: int) -> torch.Tensor:
    """``n`` nearly uniform unit vectors on the sphere (Fibonacci lattice), float32 ``(n, 3)`` in (x, y, z).

    Point ``i`` has ``z = 1 - (2i + 1)/n`` and azimuth ``i`` times the golden angle; every point
    covers the same area ``4π/n`` to within a few percent.

    Reference: Á. González, "Measurement of areas on a sphere using Fibonacci and
    latitude-longitude lattices", Math. Geosci. 42, 49-64 (2010).
    """
    if n < 1:
        raise InputError(f"the number of directions must be positive, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    z = 1 - (2 * i + 1) / n
    azimuth = i * math.pi * (3 - math.sqrt(5))
    radius = torch.sqrt(1 - z**2)
    return torch.stack([radius * torch.cos(azimuth), radius * torch.sin(azimuth), z], dim=-1).float()


@dataclass(frozen=True)
class DirectionalFSC:
    """Conical FSC curves and what they say about anisotropy.

    Attributes
    ----------
    directions : ``(D, 3)`` unit vectors (x, y, z), map coordinates.
    curves : ``(D, n_shells)`` FSC within the cone around each direction (the whole shell's
        FSC where the cone holds fewer than ``min_samples`` samples of a shell).
    sample_counts : ``(D, n_shells)`` int64 half-grid samples summed per cone and shell.
    resolution_A : ``(D,)`` resolution at ``threshold`` along each direction (Å).
    half_angle_deg : cone half-angle.
    threshold : FSC threshold of ``resolution_A``.
    sphericity : float
        Sphericity of the surface whose radius along each direction is the crossing frequency
        (1/Å), relative to the same triangulation of a sphere: 1 for an isotropic map, smaller
        the more anisotropic (``nan`` when the directions do not surround the origin).
    """

    directions: torch.Tensor
    curves: torch.Tensor
    sample_counts: torch.Tensor
    resolution_A: torch.Tensor
    half_angle_deg: float
    threshold: float
    sphericity: float


def sphericity(directions, radii) -> float:
    """Wadell sphericity of the star-shaped polyhedron with vertices ``radii[i] * directions[i]``.

    The directions are triangulated by their convex hull (they must surround the origin, e.g.
    :func:`fibonacci_directions`); volume and area of the polyhedron give
    ``ψ = π^(1/3) (6V)^(2/3) / A``, divided by ``ψ`` of the same triangulation with unit radii so
    that equal radii give exactly 1. Returns ``nan`` where the hull cannot be built or the
    radii are all zero.
    """
    from scipy.spatial import ConvexHull, QhullError

    d = np.asarray(as_tensor(directions).double().cpu())
    r = np.asarray(as_tensor(radii).double().cpu())
    if d.ndim != 2 or d.shape[1] != 3 or r.shape != (d.shape[0],):
        raise InputError(f"sphericity needs (D, 3) directions and (D,) radii, got {d.shape} and {r.shape}")
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    try:
        hull = ConvexHull(d)
    except (QhullError, ValueError):
        return math.nan
    if np.any(hull.equations[:, -1] >= 0):  # origin not strictly inside the hull
        return math.nan

    def psi(points):
        a, b, c = (points[hull.simplices[:, j]] for j in range(3))
        volume = np.abs(np.einsum("ij,ij->i", a, np.cross(b, c))).sum() / 6
        area = np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2
        return math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area if area > 0 else math.nan

    r = np.where(np.isfinite(r), r, 0.0)
    if not np.any(r > 0):
        return math.nan
    return float(psi(d * r[:, None]) / psi(d))


def directional_fsc(
    map_a,
    map_b,
    pixel_size_A: float,
    *,
    directions=None,
    n_directions: int = 200,
    half_angle_deg: float = 20.0,
    mask=None,
    threshold: float = 0.143,
    method: str = "interpolated",
    min_samples: int = 20,
) -> DirectionalFSC:
    """FSC within cones around many directions (conical FSC), with per-direction resolutions.

    Parameters
    ----------
    map_a, map_b
        Real ``(N, N, N)`` half maps.
    pixel_size_A
        Voxel size in Å.
    directions
        ``(D, 3)`` directions (x, y, z) in map coordinates; need not be normalised. Default
        ``n_directions`` Fibonacci directions over the whole sphere (each axis appears with
        both signs, which give the same cone, so the sphericity sees a closed surface).
    half_angle_deg
        Cone half-angle in degrees (20° as in 3DFSC). Narrow cones hold few samples in the low
        shells: the curves are noisier there.
    mask
        Optional real-space mask multiplied into both maps first.
    threshold, method
        Per-direction resolution as in :func:`cryolab.validate.fsc_resolution_A`
        (``"interpolated"`` by default: cone curves are coarse).
    min_samples
        A cone-shell with fewer half-grid samples than this takes the whole shell's FSC: the
        innermost shells of a narrow cone hold a handful of samples, whose FSC is too noisy
        (standard deviation about ``1/sqrt(count)``) for the first-crossing rule.

    Returns
    -------
    :class:`DirectionalFSC`.

    Notes
    -----
    Give it half maps divided plainly by their weights (or with a small constant), not half
    maps regularised with an SSNR from their own FSC: inside a poorly sampled cone the
    regulariser suppresses the few noisy samples and what remains there is signal spread in
    from neighbouring directions, the same in both halves, so the cone's FSC comes out high
    and the anisotropy is hidden (notebooks/11_direct_fourier_inversion.py shows the trap).
    """
    map_a, map_b = as_tensor(map_a), as_tensor(map_b).to(as_tensor(map_a).device)
    shape = _check_pair(map_a, map_b, 3)
    if map_a.dim() != 3 or map_b.dim() != 3:
        raise InputError("directional_fsc takes single (N, N, N) maps")
    if not 0 < half_angle_deg <= 90:
        raise InputError(f"half_angle_deg must be in (0, 90], got {half_angle_deg}")
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    if mask is not None:
        mask = as_tensor(mask, device=map_a.device)
        if tuple(mask.shape) != shape:
            raise InputError(f"mask has shape {tuple(mask.shape)}, the maps have box {shape}")
        map_a, map_b = map_a * mask, map_b * mask
    directions = fibonacci_directions(n_directions) if directions is None else as_tensor(directions)
    if directions.dim() != 2 or directions.shape[-1] != 3:
        raise InputError(f"directions must be (D, 3), got shape {tuple(directions.shape)}")
    norms = torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    if torch.any(norms == 0):
        raise InputError("directions must be nonzero vectors")
    directions = (directions / norms).to(map_a.device, torch.float32)

    n = shape[0]
    n_shells = n // 2 + 1
    shells = shell_index(shape, rfft=True, device=map_a.device).flatten()
    keep = shells < n_shells
    shells = shells[keep]
    k = fftfreq_grid(shape, rfft=True, device=map_a.device).reshape(-1, 3)[keep]
    k_norm = torch.linalg.vector_norm(k, dim=-1)
    unit = k / k_norm.clamp_min(1e-12)[:, None]
    a = torch.fft.rfftn(map_a).flatten()[keep].to(torch.complex128)
    b = torch.fft.rfftn(map_b).flatten()[keep].to(torch.complex128)
    terms = torch.stack([(a * b.conj()).real, a.abs() ** 2, b.abs() ** 2])  # (3, M)
    cos_limit = math.cos(math.radians(half_angle_deg))

    curves = torch.zeros(len(directions), n_shells, dtype=torch.float64, device=map_a.device)
    counts = torch.zeros(len(directions), n_shells, dtype=torch.int64, device=map_a.device)
    for i in progress(range(len(directions)), desc="directional FSC", unit="cone"):
        inside = ((unit @ directions[i]).abs() >= cos_limit) | (k_norm == 0)
        s = shells[inside]
        sums = torch.zeros(3, n_shells, dtype=torch.float64, device=map_a.device)
        sums.index_add_(1, s, terms[:, inside])
        denominator = torch.sqrt(sums[1] * sums[2])
        curves[i] = torch.where(denominator > 0, sums[0] / denominator.clamp_min(1e-300), torch.zeros_like(denominator))
        counts[i] = torch.bincount(s, minlength=n_shells)
    # The innermost shells of a narrow cone hold few samples (none, for the first shells of a
    # 20° cone): there the cone takes the whole shell's FSC, so that the first-crossing search
    # does not stop at a noisy or empty shell.
    whole = torch.zeros(3, n_shells, dtype=torch.float64, device=map_a.device).index_add_(1, shells, terms)
    whole_curve = whole[0] / torch.sqrt(whole[1] * whole[2]).clamp_min(1e-300)
    curves = torch.where(counts >= min_samples, curves, whole_curve).float()
    resolution = fsc_resolution_A(curves, n, pixel_size_A, threshold, method=method)
    return DirectionalFSC(
        directions=directions,
        curves=curves,
        sample_counts=counts,
        resolution_A=resolution,
        half_angle_deg=float(half_angle_deg),
        threshold=float(threshold),
        sphericity=sphericity(directions, 1.0 / resolution.double()),
    )
