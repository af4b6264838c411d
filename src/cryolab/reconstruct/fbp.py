"""Filtered back-projection (weighted back-projection), for teaching: no weights grid, no CTF.

Back-projecting projections smears every image along its viewing direction; summed over views
the smear is the map convolved with ``1/|x|²`` in 3D (``1/|k|`` in Fourier space), because the
central slices of ``n`` uniformly spread views crowd the origin: at frequency radius ``r`` their
sample points have density ``ρ(r) = n / (2 r)`` per unit volume (in units of the image's
frequency spacing). Multiplying each image's transform by ``1/ρ = 2r/n`` — the *ramp filter* —
before back-projecting undoes it: the weighted back-projection of Radermacher (1988),
the 3D analogue of the filtered back-projection of computed tomography.

The back-projection itself is the adjoint of the Fourier projector
(:func:`cryolab.projection.insert_central_slices_rfft`, here through
:func:`~cryolab.reconstruct.backproject_chunk`), followed by the gridding correction; compare
:func:`~cryolab.reconstruct.finalize`, which divides by the actual sample density (the weight
grid) instead of its analytic average, and so also handles uneven view distributions and CTFs.

References
----------
M. Radermacher, "Three-dimensional reconstruction of single particles from random and nonrandom
tilt series", J. Electron Microsc. Tech. 9 (1988) 359; J. Frank, *Three-Dimensional Electron
Microscopy of Macromolecular Assemblies* (2006), ch. 5.
"""

from __future__ import annotations

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid
from cryolab.reconstruct.backproject import PartialReconstruction, backproject_chunk
from cryolab.reconstruct.finalize import _symmetrise_kx0, table_to_map

__all__ = ["ramp_filter_rfft", "filtered_backprojection"]


def ramp_filter_rfft(box_size: int, n_views: int, *, pad_size: int) -> torch.Tensor:
    """Ramp filter for weighted back-projection, float32 ``(N, N//2 + 1)`` (unshifted rfft layout).

    ``2 r (P/N)² / n`` with ``r = |k| · P`` the frequency radius in voxels of the padded grid
    (the inverse sample density of ``n`` uniformly spread slices, one per image-frequency cell of
    ``(P/N)²`` grid voxels); ``1/n`` at the origin, which every slice samples; halved on the
    ``kx = 0`` column apart from the origin, whose Friedel pairs the rfft half-plane holds twice.
    """
    n, p = int(box_size), int(pad_size)
    if n_views < 1:
        raise InputError(f"need at least one view, got {n_views}")
    k = fftfreq_grid((n, n), rfft=True)
    radius = torch.linalg.vector_norm(k, dim=-1) * p
    ramp = 2 * radius * (p / n) ** 2 / n_views
    ramp[..., 0] *= 0.5
    ramp[0, 0] = 1.0 / n_views
    return ramp.to(torch.float32)


def filtered_backprojection(images, rotations, shifts_A=None, *, pixel_size_A: float | None = None,
                            pad_factor: float = 2, interpolation: str = "linear") -> torch.Tensor:
    """Weighted back-projection of CTF-free projections (module docstring).

    Parameters
    ----------
    images
        Real ``(B, N, N)`` projections centred at ``N//2``, views spread uniformly.
    rotations
        ``(B, 3, 3)`` RELION matrices ``A``.
    shifts_A, pixel_size_A
        Optional origins ``(B, 2)`` in Å (``rlnOriginX/YAngst``) and the pixel size.
    pad_factor, interpolation
        As :func:`backproject_chunk`.

    Returns
    -------
    float32 ``(N, N, N)`` map centred at ``N//2``, in the units of the projections' map (the
    ramp makes ``Σ`` over views of the filtered slices an estimate of the map's transform).
    Accurate only for many, evenly spread views; the origin's neighbourhood (radius of about
    one Fourier voxel) is poorly estimated, which shows as a smooth offset.
    """
    images = as_tensor(images, dtype=torch.float32)
    if images.dim() != 3 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"images must be (B, N, N), got shape {tuple(images.shape)}")
    b, n = images.shape[0], images.shape[-1]
    empty = PartialReconstruction.zeros(n, pad_factor=pad_factor, interpolation=interpolation)
    ramp = ramp_filter_rfft(n, b, pad_size=empty.pad_size)
    # the ramp goes in as a CTF on the data only: the weight grid is not used
    partial = backproject_chunk(images, rotations, shifts_A, ramp[None].expand(b, -1, -1), pixel_size_A=pixel_size_A,
                                out=empty)
    data, _ = _symmetrise_kx0(*partial.folded())
    return table_to_map(data, n, interpolation=interpolation)
