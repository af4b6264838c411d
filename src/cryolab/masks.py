"""Real-space masks for maps: spherical, and threshold → extend → soft edge (like relion_mask_create).

All masks are float32 in [0, 1], shaped like the map ``(N, N, N)`` (a spherical mask may also be
2D), with lengths in Å at the map's pixel size (docs/conventions.md). Soft edges are raised
cosines, ``0.5 + 0.5 cos(π t)`` for ``t`` from 0 (inside) to 1 (outside), which fall smoothly to
0 and so do not ring in Fourier space the way a hard edge does.

References
----------
RELION ``relion_mask_create`` (``--ini_threshold``, ``--extend_inimask``, ``--width_soft_edge``);
S. H. W. Scheres, "RELION: implementation of a Bayesian approach to cryo-EM structure
determination", J. Struct. Biol. 180, 519-530 (2012).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = ["spherical_mask", "threshold_mask", "soft_edge_from_distance", "check_mask"]


def soft_edge_from_distance(distance_A, edge_width_A: float) -> torch.Tensor:
    """Raised-cosine fall-off with distance outside a region: 1 at 0 Å, 0 from ``edge_width_A`` on.

    ``distance_A <= 0`` (inside) gives 1; with ``edge_width_A == 0`` the edge is hard.
    """
    distance_A = as_tensor(distance_A)
    if edge_width_A < 0:
        raise InputError(f"soft edge width must be >= 0 Å, got {edge_width_A}")
    if edge_width_A == 0:
        return (distance_A <= 0).to(torch.float32)
    t = (distance_A / edge_width_A).clamp(0.0, 1.0)
    return (0.5 + 0.5 * torch.cos(math.pi * t)).to(torch.float32)


def _positive(value: float, name: str) -> float:
    if not (value is not None and np.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number, got {value}")
    return float(value)


def spherical_mask(
    box_size: int,
    pixel_size_A: float,
    radius_A: float,
    *,
    soft_edge_A: float = 0.0,
    center_A: Sequence[float] | None = None,
    ndim: int = 3,
    device=None,
) -> torch.Tensor:
    """Sphere (or disc) of ``radius_A`` with a raised-cosine edge of width ``soft_edge_A`` beyond it.

    Parameters
    ----------
    box_size
        N; the mask is ``(N, N, N)`` (or ``(N, N)`` with ``ndim=2``).
    pixel_size_A
        Voxel size in Å.
    radius_A
        Radius (Å) inside which the mask is 1, measured from the box centre ``N // 2``.
    soft_edge_A
        Width (Å) of the raised cosine from 1 at ``radius_A`` to 0 at ``radius_A + soft_edge_A``.
    center_A
        Offset of the sphere's centre from the box centre, ``(x, y[, z])`` in Å.
    ndim
        3 for a map, 2 for an image.

    Returns
    -------
    float32 tensor in [0, 1].
    """
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    radius_A = _positive(radius_A, "radius_A")
    if ndim not in (2, 3):
        raise InputError(f"ndim must be 2 or 3, got {ndim}")
    if int(box_size) < 1:
        raise InputError(f"box_size must be positive, got {box_size}")
    n = int(box_size)
    offset = [0.0] * ndim if center_A is None else [float(c) for c in center_A]
    if len(offset) != ndim:
        raise InputError(f"center_A must have {ndim} components (x, y[, z]), got {center_A}")
    axis = (torch.arange(n, dtype=torch.float64, device=device) - n // 2) * pixel_size_A
    grids = torch.meshgrid(*([axis] * ndim), indexing="ij")  # array order (z,) y, x
    # grids[-1] is x, grids[-2] is y, grids[-3] is z; offsets are given (x, y, z).
    r2 = sum((g - offset[ndim - 1 - i]) ** 2 for i, g in enumerate(grids))
    return soft_edge_from_distance(torch.sqrt(r2) - radius_A, float(soft_edge_A))


def threshold_mask(
    volume,
    pixel_size_A: float,
    threshold: float,
    *,
    extend_A: float = 0.0,
    soft_edge_A: float = 0.0,
    lowpass_A: float | None = None,
) -> torch.Tensor:
    """Mask from a density threshold, extended by a distance and given a soft edge (relion_mask_create).

    Steps, as ``relion_mask_create``: (optionally) low-pass the map at ``lowpass_A`` so the
    mask follows the molecule's envelope rather than noise; mark voxels with density
    ``>= threshold``; add every voxel closer than ``extend_A`` to that region (or, for negative
    ``extend_A``, remove every voxel closer than ``-extend_A`` to the outside); then give the
    voxels outside it the value ``0.5 + 0.5 cos(π d / soft_edge_A)`` for a distance ``d`` to
    the region below ``soft_edge_A``. Distances are Euclidean between voxel centres
    (:func:`scipy.ndimage.distance_transform_edt`).

    Parameters
    ----------
    volume
        ``(N, N, N)`` map (any box shape works without ``lowpass_A``).
    pixel_size_A
        Voxel size of the map in Å.
    threshold
        Density threshold, in the map's units.
    extend_A
        Dilation distance in Å (negative erodes).
    soft_edge_A
        Width of the raised-cosine edge in Å.
    lowpass_A
        Resolution in Å of a low-pass filter applied before thresholding (RELION's
        ``--lowpass``; cut at the nearest shell with a 2-shell cosine edge); ``None`` for none.

    Returns
    -------
    float32 ``volume.shape`` mask in [0, 1]: 1 on the (extended) region.

    Raises
    ------
    InputError
        No voxel above the threshold (or none left after eroding), bad lengths.
    """
    from scipy import ndimage

    from cryolab.fourier import apply_filter, lowpass_filter

    volume = as_tensor(volume)
    if volume.dim() != 3:
        raise InputError(f"threshold_mask needs a 3D map, got shape {tuple(volume.shape)}")
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    if soft_edge_A < 0:
        raise InputError(f"soft edge width must be >= 0 Å, got {soft_edge_A}")
    if lowpass_A is not None:
        lowpass_A = _positive(lowpass_A, "lowpass_A")
        n = volume.shape[-1]
        if len(set(volume.shape)) != 1:
            raise InputError(f"low-pass filtering before thresholding needs a cubic map, got shape {tuple(volume.shape)}")
        shell = round(n * pixel_size_A / lowpass_A)
        volume = apply_filter(volume, lowpass_filter(volume.shape, shell / n, edge_width=2.0 / n, device=volume.device), ndim=3)
    region = (volume >= threshold).cpu().numpy()
    if not region.any():
        raise InputError(f"no voxel reaches the threshold {threshold:g} (map range {float(volume.min()):.4g} .. {float(volume.max()):.4g})")
    # Distances in pixels; RELION's comparisons are strict ("closer than"), the small margin
    # keeps a distance equal to the extension outside despite rounding of Å -> pixels.
    extend_px = float(extend_A) / pixel_size_A
    if extend_px > 0 and not region.all():
        region = ndimage.distance_transform_edt(~region) < extend_px - 1e-6
    elif extend_px < 0:
        region = ndimage.distance_transform_edt(region) >= -extend_px - 1e-6
        if not region.any():
            raise InputError(f"eroding by {-extend_A:g} Å leaves an empty mask")
    if region.all() or soft_edge_A == 0:
        return torch.from_numpy(region.astype(np.float32)).to(volume.device)
    distance_px = ndimage.distance_transform_edt(~region)  # 0 inside the region
    edge_px = float(soft_edge_A) / pixel_size_A
    mask = soft_edge_from_distance(torch.from_numpy(distance_px), edge_px)
    return mask.to(volume.device)


def check_mask(mask, shape: Sequence[int], *, pixel_size_A: float | None = None, mask_pixel_size_A: float | None = None,
               path=None, rtol: float = 1e-3) -> torch.Tensor:
    """Check that a mask fits a map: same box, same pixel size, values in [0, 1].

    Parameters
    ----------
    mask
        The mask array.
    shape
        The map's shape.
    pixel_size_A, mask_pixel_size_A
        The map's and the mask's pixel sizes in Å (from their headers); compared when both
        are known, with relative tolerance ``rtol``.
    path
        The mask's file, named in the error.

    Returns
    -------
    The mask as a float32 tensor.

    Raises
    ------
    InputError
        Different box or pixel size, or values outside [0, 1] (beyond 1e-6, as RELION checks).
    """
    mask = as_tensor(mask)
    shape = tuple(int(s) for s in shape)
    if tuple(mask.shape) != shape:
        raise InputError(f"mask has shape {tuple(mask.shape)} but the map has shape {shape}", path)
    if pixel_size_A is not None and mask_pixel_size_A is not None:
        if abs(mask_pixel_size_A - pixel_size_A) > rtol * pixel_size_A:
            raise InputError(f"mask pixel size {mask_pixel_size_A:g} Å differs from the map's {pixel_size_A:g} Å", path)
    low, high = float(mask.min()), float(mask.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InputError(f"mask values must lie in [0, 1], found {low:.4g} .. {high:.4g}", path)
    return mask
