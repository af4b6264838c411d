"""Local filtering: low-pass each part of a map at its own local resolution.

A map filtered at its global resolution is over-filtered where it is better than average and
shows noise where it is worse. Given a local-resolution map (:func:`cryolab.validate.local_resolution`),
the map is low-pass filtered (:func:`cryolab.postprocess.lowpass_at_resolution`, raised-cosine edge)
at a few resolutions spanning the local range, equally spaced in spatial frequency, and each
voxel takes the linear blend, in ``1/resolution``, of the two filtered maps that bracket its
local resolution. A voxel at one of those resolutions gets that filtered map exactly; one
between two gets a filter between theirs. The weights are tents in frequency that sum to 1, so
the filtered maps are accumulated one at a time (memory: two maps).

This is the filtering half of blocres's ``blocfilt`` and RELION's ``--locres`` output
(``relion_locres_filtered.mrc``), which filter point by point; a bank of global filters blended
per voxel gives the same result for a slowly varying local resolution, at the cost of a few
FFTs of the whole map.

References
----------
G. Cardone, J. B. Heymann & A. C. Steven, J. Struct. Biol. 184, 226-236 (2013) (blocfilt);
RELION ``Postprocessing::run_locres`` (src/postprocessing.cpp).
"""

from __future__ import annotations

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.postprocess import _check_volume, _positive, lowpass_at_resolution

__all__ = ["local_lowpass_levels_A", "local_lowpass"]


def local_lowpass_levels_A(local_resolution_A, *, n_levels: int = 10) -> torch.Tensor:
    """Resolutions (Å) of the filter bank: ``n_levels`` equally spaced in frequency from the
    coarsest to the finest local resolution (one level where they are equal), coarsest first."""
    resolution = as_tensor(local_resolution_A)
    if int(n_levels) != n_levels or n_levels < 2:
        raise InputError(f"n_levels must be an integer >= 2, got {n_levels}")
    if not bool(torch.isfinite(resolution).all()):
        raise InputError("the local resolution has NaN or infinite voxels: fill them (e.g. with the global resolution) first")
    if float(resolution.min()) <= 0:
        raise InputError(f"local resolutions must be positive Å, found {float(resolution.min()):g}")
    low, high = 1.0 / float(resolution.max()), 1.0 / float(resolution.min())  # 1/Å
    if high - low <= 1e-6 * high:
        return torch.tensor([1.0 / high], dtype=torch.float64)
    return 1.0 / torch.linspace(low, high, int(n_levels), dtype=torch.float64)


def local_lowpass(volume, local_resolution_A, pixel_size_A: float, *, n_levels: int = 10, edge_width_shells: float = 2.0) -> torch.Tensor:
    """Low-pass filter ``volume`` voxel by voxel at ``local_resolution_A`` (see the module notes).

    Parameters
    ----------
    volume
        ``(N, N, N)`` map (the average of the half maps, sharpened or not).
    local_resolution_A
        ``(N, N, N)`` local resolution in Å, finite everywhere (fill voxels outside a mask, e.g.
        with the global resolution, before).
    pixel_size_A
        Voxel size in Å.
    n_levels
        Number of filtered maps spanning the local range (:func:`local_lowpass_levels_A`).
    edge_width_shells
        Width of each low-pass filter's raised-cosine edge, in Fourier shells of the box.

    Returns
    -------
    ``(N, N, N)`` filtered map, the dtype and device of ``volume``.
    """
    volume = _check_volume(volume)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    resolution = as_tensor(local_resolution_A, device=volume.device)
    if resolution.shape != volume.shape:
        raise InputError(f"the local resolution has shape {tuple(resolution.shape)}, the map {tuple(volume.shape)}")
    levels_A = local_lowpass_levels_A(resolution, n_levels=n_levels)
    if len(levels_A) == 1:
        return lowpass_at_resolution(volume, pixel_size_A, float(levels_A[0]), edge_width_shells=edge_width_shells)
    lowest, spacing = 1.0 / float(levels_A[0]), 1.0 / float(levels_A[1]) - 1.0 / float(levels_A[0])  # 1/Å
    # Fractional level of each voxel: the tent weight of level i is max(0, 1 - |u - i|).
    u = (1.0 / resolution.double() - lowest) / spacing
    u = u.clamp(0, len(levels_A) - 1).to(volume.dtype)
    filtered = torch.zeros_like(volume)
    for i, level_A in enumerate(levels_A.tolist()):
        weight = (1 - (u - i).abs()).clamp(min=0)
        if bool((weight > 0).any()):
            filtered += weight * lowpass_at_resolution(volume, pixel_size_A, level_A, edge_width_shells=edge_width_shells)
    return filtered
