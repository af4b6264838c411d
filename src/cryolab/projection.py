"""Projection of a 3D map into 2D images: a Fourier-slice projector and a real-space reference.

Convention (docs/conventions.md, "Rotations and projection" and "Shifts")
------------------------------------------------------------------------
A rotation matrix ``A`` (``(..., 3, 3)``, RELION's ``Euler_angles2matrix``) maps map coordinates
into the view frame, and the projection is the line integral along the view axis,

    P(x, y) = ∫ V(Aᵀ (x, y, z)) dz,          dz in voxels (as RELION: a sum over voxels),

with ``x = j - N//2``, ``y = i - N//2`` for the pixel at row ``i``, column ``j`` (and likewise for
voxels). By the projection-slice theorem the image's transform is the central slice
``F_P(kx, ky) = F_V(Aᵀ (kx, ky, 0)) = F_V(kx · A[0, :] + ky · A[1, :])``: the slice is spanned by
the first two *rows* of ``A``. A particle whose origin is ``o = (rlnOriginXAngst,
rlnOriginYAngst)`` appears as ``image(x) = P(x + o)``, i.e. its centre sits at ``N//2 - o``.

The Fourier projector, step by step (:func:`project_fourier` chains them)
------------------------------------------------------------------------
1. :func:`prepare_volume_for_projection` — once per map. Divide the map by the Fourier transform
   of the interpolation kernel (the *gridding correction*, :func:`gridding_correction`: ``sinc²``
   per axis for linear interpolation), zero-pad it to ``P ≈ pad_factor · N`` voxels about its
   centre, and take the centred rfft. The result is a lookup table with ``kx ≥ 0`` only (rfft
   half) and the zero frequency at index ``P//2`` on the ``kz`` and ``ky`` axes, so that the
   neighbours of a frequency are neighbours in the array.
2. :func:`extract_central_slices_rfft` — per batch of poses. For every pixel of the image's
   rfft half-plane, evaluate the table at ``Aᵀ (kx, ky, 0)`` by interpolation. Points with
   ``kx < 0`` in the map's frame are read at ``-k`` and conjugated (Friedel symmetry of the
   transform of a real map). Interpolation taps that fall just outside the stored range read
   their true values — the ``+P/2`` planes by the periodicity of the DFT, ``kx < 0`` columns by
   Friedel symmetry — so the band edge is as accurate as the rest. Frequencies beyond ``|k| = (N//2)/N`` cycles/pixel
   (:func:`band_limit`) are zero, so the projector treats every direction alike (the corners of
   the 2D transform are not in the 3D sphere of known frequencies for every rotation).
   On the CPU, linear interpolation runs as a compiled sweep through the table in memory order
   (section "compiled CPU path" below): the same values, several times faster.
3. :func:`apply_shifts_rfft` — phase ramp for the particle origins; the CTF, if any, multiplies
   the slice here as well.
4. :func:`central_slices_to_images` — inverse rfft and recentring at ``N//2``.

:func:`insert_central_slices_rfft` is the adjoint of step 2 (back-projection into the same
table layout, with a weight grid): reconstruction builds on it.

Why the slice is sampled on the ``N × N`` image grid directly, and why rfft + Friedel symmetry
------------------------------------------------------------------------------------------------
Padding in real space oversamples the 3D transform by ``P / N``; that oversampling is what makes
linear interpolation accurate. The slice itself is then read at the image's own frequencies
(``k · P`` in table units) — exactly RELION's ``Projector::project`` — instead of reading a
``P × P`` slice and cropping the ``P × P`` image back to ``N × N``: the two agree wherever the
projection of the map fits in the ``N × N`` box (always, for a map that is zero outside the
sphere inscribed in its box, as masked cryo-EM maps are), and the direct reading costs
``pad_factor²`` times less. The rfft table halves the memory of the padded transform and the
2D rfft output halves the work; the price is the conjugate lookup for ``kx < 0`` and a margin of
one or two samples (Friedel partners and periodic copies) added to the table before sampling.

Accuracy
--------
With linear interpolation (RELION's projector, reproduced to correlation > 0.99999) the gridding
correction is exact only on average over where the slice points fall between table samples: a
sample that lands exactly on a table node (every sample of an axis-aligned view) is not blurred
but is still divided by ``sinc²``, and aliased copies of the map, ``P`` voxels away, leak in
elsewhere. For a Gaussian blob 9 voxels off-centre in a 48³ box (``pad_factor=2``) the peak error
is ~0.8 % for random views and ~3 % for axis-aligned ones; it falls as ``1/pad_factor²`` (0.2 % and
0.8 % at ``pad_factor=4``) and grows with the distance from the centre. The zero frequency is always
on a node, so the projected mass of a map that fills half the box is ~3 % high. RELION has the same
errors. ``interpolation="cubic"`` (Keys, 64 taps, ~3-6× slower) brings them to ~0.1 % at
``pad_factor=2``.

RELION 3.1.3 and odd boxes
--------------------------
``relion_project`` puts the projection of an odd box's centre voxel ``N//2`` at pixel ``N//2 + 1``
in x and y: after the inverse FFT its ``CenterFFT(img, false)`` moves index 0 to ``(N+1)//2``
(``ifftshift``), whereas the map was centred with ``N//2`` (``fftshift`` semantics) when padded.
cryolab keeps ``N//2`` (docs/conventions.md); RELION's odd-box images agree with ours after a roll
by -1 pixel in x and y. Even boxes agree as they are.

References
----------
R. N. Bracewell, "Strip integration in radio astronomy", Aust. J. Phys. 9 (1956) 198 (the
projection-slice theorem); J. I. Jackson, C. H. Meyer, D. G. Nishimura, A. Macovski, "Selection of
a convolution function for Fourier inversion using gridding", IEEE Trans. Med. Imaging 10 (1991)
473 (the gridding correction); S. H. W. Scheres, "RELION", J. Struct. Biol. 180 (2012) 519, and
RELION ``src/projector.cpp`` (padding, trilinear central-slice extraction, Friedel lookup).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from typing import Sequence

import numpy as np
import torch

from cryolab._tensor import as_tensor, broadcast_shapes
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid, phase_ramp_rfft
from cryolab.interpolate import insert_into_grid_3d, sample_grid_3d

__all__ = [
    "apply_shifts_rfft",
    "band_limit",
    "band_limited_frequencies",
    "central_slices_to_images",
    "extract_central_slices_rfft",
    "gridding_correction",
    "insert_central_slices_rfft",
    "padded_size",
    "prepare_volume_for_projection",
    "project_fourier",
    "project_real",
]

_FOURIER_METHODS = ("linear", "nearest", "cubic")
_REAL_SPACE_POINTS_PER_CHUNK = 1 << 22  # samples per sample_grid_3d call in project_real (memory)


def _check_method(interpolation: str) -> None:
    if interpolation not in _FOURIER_METHODS:
        raise InputError(f"interpolation must be one of {_FOURIER_METHODS}, got {interpolation!r}")


def _as_data_tensor(x, *, device=None) -> torch.Tensor:
    """Tensor of map/image data: torch floating and complex dtypes are kept (float64 stays
    float64, for precise checks); numpy arrays and sequences become float32/complex64."""
    if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()):
        return x if device is None else x.to(device)
    return as_tensor(x, device=device)


# --------------------------------------------------------------------------------------------
# Step 1: the lookup table
# --------------------------------------------------------------------------------------------


def padded_size(n: int, pad_factor: float) -> int:
    """Size ``P`` of the zero-padded box: ``round(pad_factor · n)``, rounded up to even.

    An even ``P`` puts the ``-P/2`` (Nyquist) sample of the padded transform at index 0 of the
    centred table, so the table is symmetric about its centre ``P//2`` except for that plane.
    """
    if not pad_factor >= 1.0:
        raise InputError(f"pad_factor must be >= 1, got {pad_factor}")
    p = int(round(pad_factor * n))
    return p + p % 2


def _kernel_transform(u: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Fourier transform ``K̂(u) = ∫ k(t) exp(-2πi u t) dt`` of the 1D interpolation kernel ``k``.

    Nearest neighbour: the unit box, ``sinc(u)``; linear: the triangle, ``sinc²(u)``. Cubic: the
    kernel is read from ``cryolab.interpolate.sample_grid_3d`` itself (the weight a unit sample at
    index 0 gets at offset ``t``), and integrated by Gauss-Legendre quadrature on each of its four
    polynomial pieces — exact up to rounding, and always consistent with the sampler.
    """
    if interpolation == "nearest":
        return torch.sinc(u)
    if interpolation == "linear":
        return torch.sinc(u) ** 2
    nodes, weights = np.polynomial.legendre.leggauss(16)  # on [-1, 1]
    t = torch.as_tensor(np.concatenate([(nodes + 1) / 2 + a for a in range(-2, 2)]), dtype=torch.float64)
    w = torch.as_tensor(np.tile(weights / 2, 4), dtype=torch.float64)
    unit = torch.zeros(1, 1, 5, dtype=torch.float64)
    unit[0, 0, 2] = 1.0  # a unit sample at x = 2; the kernel at offset t is its value at x = 2 + t
    points = torch.stack([2 + t, torch.zeros_like(t), torch.zeros_like(t)], dim=-1)
    kernel = sample_grid_3d(unit, points, method=interpolation)
    return (w * kernel * torch.cos(2 * math.pi * u[..., None] * t)).sum(-1)


def gridding_correction(shape: Sequence[int], pad_size: int, *, interpolation: str = "linear") -> torch.Tensor:
    """Real-space envelope of Fourier-space interpolation on a grid of ``pad_size`` samples.

    Interpolating a transform sampled every ``1/pad_size`` cycles/voxel is a convolution with the
    interpolation kernel, which multiplies the (periodically repeated) real-space map by the
    kernel's transform at ``x / P``: ``sinc(x/P)`` per axis for nearest neighbour, ``sinc²(x/P)``
    for linear interpolation (the transform of the triangle), ``sinc(u) = sin(πu)/(πu)``, and the
    transform of the Keys kernel for cubic. Dividing the map by this envelope before the forward
    transform cancels it for the central copy (see the module notes on accuracy). The envelope
    is separable, the exact transform of the tensor-product kernel (RELION uses the radial
    ``sinc²(|x|/P)``, nearly equal inside the box).

    Parameters
    ----------
    shape
        Real-space shape ``(d, h, w)`` (or ``(h, w)``) of the unpadded map, centred at ``N//2``.
    pad_size
        ``P``, the number of samples per axis of the padded transform.
    interpolation
        ``"linear"``, ``"nearest"`` or ``"cubic"``.

    Returns
    -------
    float64 tensor of ``shape``: the envelope, 1 at the centre voxel, > 0 everywhere.
    """
    _check_method(interpolation)
    envelope = None
    for axis, n in enumerate(shape):
        x = (torch.arange(int(n), dtype=torch.float64) - int(n) // 2) / pad_size
        factor = _kernel_transform(x, interpolation)
        factor = factor.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        envelope = factor if envelope is None else envelope * factor
    return envelope


def prepare_volume_for_projection(volume, *, pad_factor: float = 2, interpolation: str = "linear",
                                  executor=None) -> torch.Tensor:
    """Central-slice lookup table of a map: gridding correction, zero padding and centred rfft.

    Computed once per map and reused for any number of :func:`extract_central_slices_rfft`
    calls.

    Parameters
    ----------
    volume
        Real ``(..., N, N, N)`` map, centred at ``N//2``; leading dimensions are batch dimensions.
    pad_factor
        Oversampling of the 3D transform, ``>= 1``; the padded box has ``P = padded_size(N,
        pad_factor)`` voxels per axis. 2 is RELION's default; interpolation errors fall as
        ``1/pad_factor²`` (module notes on accuracy).
    interpolation
        The interpolation :func:`extract_central_slices_rfft` will use (``"linear"``,
        ``"nearest"`` or ``"cubic"``); it fixes the gridding correction.
    executor
        Optional ``concurrent.futures.Executor`` (CPU): the transforms along each axis are
        computed in two halves (independent lines), one by the calling thread and one by the
        executor — about twice as fast with a second idle core. The halves are the same without an
        executor, so the table does not depend on it (nor on its number of threads).

    Returns
    -------
    volume_ft_centered
        complex64 ``(..., P, P, P//2 + 1)`` (complex128 for a float64 map): the rfft of the
        corrected, padded map (unnormalised,
        origin at the map's centre voxel) with ``kz`` and ``ky`` fftshifted — the zero frequency
        at index ``(P//2, P//2, 0)`` — and ``kx = 0 … P/2`` along the last axis. The value for
        frequency ``k`` (cycles/voxel) sits at array index ``(z, y, x) = (P//2 + kz·P, P//2 +
        ky·P, kx·P)``.
    """
    volume = _as_data_tensor(volume)
    if volume.is_complex():
        raise InputError(f"volume must be real, got {volume.dtype}")
    if volume.dim() < 3 or not (volume.shape[-1] == volume.shape[-2] == volume.shape[-3]):
        raise InputError(f"volume must be a cube (..., N, N, N), got shape {tuple(volume.shape)}")
    n = volume.shape[-1]
    p = padded_size(n, pad_factor)
    envelope = gridding_correction((n, n, n), p, interpolation=interpolation).to(volume.dtype)
    corrected = volume / envelope.to(volume.device)
    # Zero-pad centre on centre (N//2 -> P//2, as cryolab.fourier.pad_center), then the centred
    # rfft (cryolab.fourier.rfft_centered) and fftshift of kz, ky (cryolab.fourier.rfft_fftshift),
    # written with torch.fft directly so that float64 maps keep float64 precision. Computed axis
    # by axis so that the transforms skip the padding: ifftshift(pad(v)) is v wrapped around index
    # 0 (voxel N//2 at 0), zero-padded on each axis just before that axis is transformed; the
    # fftshift of kz and ky (P even) is a modulation of the map by (-1)^(z + y).
    parity = (torch.arange(n, device=volume.device) - n // 2) % 2
    sign = (1 - 2 * parity).to(volume.dtype)
    table = corrected * sign[:, None, None] * sign[None, :, None]
    for dim in (-1, -2, -3):
        table = _transform_axis(_wrap_into(table, p, dim), dim, executor)
    return table.contiguous()


def _transform_axis(x: torch.Tensor, dim: int, executor) -> torch.Tensor:
    """rfft (``dim`` -1) or fft (-2, -3) of ``x`` along ``dim``; on the CPU without autograd, in two
    halves along another axis (the second on ``executor`` if given) and, for the fft, in place:
    the same values without a second array of the table's size and its fresh pages, and
    contiguous, where the FFT along kz may return a strided layout."""
    if x.requires_grad or x.device.type != "cpu":  # (out= does not support autograd)
        return torch.fft.rfft(x, dim=dim) if dim == -1 else torch.fft.fft(x, dim=dim)
    if dim == -1:
        out = x.new_empty(*x.shape[:-1], x.shape[-1] // 2 + 1, dtype=torch.promote_types(x.dtype, torch.complex64))
    else:
        out = x
    split = -2 if dim == -3 else -3
    size = x.shape[split]

    def half(lo: int, length: int) -> None:
        source, target = x.narrow(split, lo, length), out.narrow(split, lo, length)
        if dim == -1:
            torch.fft.rfft(source, dim=dim, out=target)
        else:
            torch.fft.fft(source, dim=dim, out=target)

    second = None if executor is None else executor.submit(half, size // 2, size - size // 2)
    half(0, size // 2)
    if second is None:
        half(size // 2, size - size // 2)
    else:
        second.result()
    return out


def _wrap_into(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``ifftshift(pad_center(x, size))`` along ``dim``: the centre sample ``n//2`` goes to index 0,
    the samples before it to the end of a zero axis of ``size`` samples."""
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = size
    out = x.new_zeros(shape)
    out.narrow(dim, 0, n - n // 2).copy_(x.narrow(dim, n // 2, n - n // 2))
    if n // 2:
        out.narrow(dim, size - n // 2, n // 2).copy_(x.narrow(dim, 0, n // 2))
    return out


# --------------------------------------------------------------------------------------------
# Step 2: central slices and their adjoint
# --------------------------------------------------------------------------------------------


def _check_table(volume_ft_centered: torch.Tensor) -> int:
    shape = tuple(volume_ft_centered.shape)
    if len(shape) < 3 or shape[-3] != shape[-2] or shape[-1] != shape[-2] // 2 + 1 or shape[-2] % 2:
        raise InputError(
            f"volume_ft_centered must have shape (..., P, P, P//2 + 1) with P even "
            f"(from prepare_volume_for_projection), got {shape}"
        )
    if not volume_ft_centered.is_complex():
        raise InputError(f"volume_ft_centered must be complex, got {volume_ft_centered.dtype}")
    return shape[-2]


def _check_rotations(rotations, device, dtype) -> torch.Tensor:
    rotations = as_tensor(rotations, dtype=dtype, device=device)
    if rotations.dim() < 2 or tuple(rotations.shape[-2:]) != (3, 3):
        raise InputError(f"rotations must have shape (..., 3, 3), got {tuple(rotations.shape)}")
    return rotations


def band_limit(image_shape: Sequence[int]) -> float:
    """Radius of the disc of frequencies every slice keeps, in cycles/pixel: ``(N//2) / N``.

    The largest circle inside the image's frequency grid: 1/2 for even ``N``, ``(N-1)/(2N)`` for
    odd ``N`` (whose highest frequency along an axis is ``(N-1)/2`` cycles per box) — RELION's
    ``r_max = N/2`` pixels. For rectangular images the smaller axis decides.
    """
    return min((int(n) // 2) / int(n) for n in image_shape)


def _slice_table_coordinates(
    k2d: torch.Tensor, rotations: torch.Tensor, pad: int, before: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table coordinates of the slice points ``Aᵀ (kx, ky, 0)``, folded onto ``kx >= 0``.

    Returns ``coords`` ``(..., M, 3)`` as (x, y, z) array-index coordinates of the centred rfft
    table (:func:`prepare_volume_for_projection`, with ``before`` margin samples in front on
    every axis, :func:`_extend_table`) and the mask ``(..., M)`` of points that were reflected
    through the origin (their value is the conjugate of the table's).
    """
    k2d = k2d.to(rotations.dtype)
    # Aᵀ (kx, ky, 0) = kx · A[0, :] + ky · A[1, :]   -> (..., M, 3) in cycles/voxel
    k3d = k2d[:, :1] * rotations[..., None, 0, :] + k2d[:, 1:] * rotations[..., None, 1, :]
    reflected = k3d[..., 0] < 0
    k3d = torch.where(reflected[..., None], -k3d, k3d)
    origin = torch.tensor([before, pad // 2 + before, pad // 2 + before], dtype=k3d.dtype, device=k3d.device)
    return k3d * pad + origin, reflected


def _friedel_index(pad: int, device) -> torch.Tensor:
    """Index of ``-k`` for each index of ``k`` along a centred axis of even length ``pad``
    (``k = i - pad//2``; the lone ``-pad/2`` sample is its own partner, by periodicity)."""
    return (pad - torch.arange(pad, device=device)) % pad


def _friedel_columns(table: torch.Tensor, columns: Sequence[int]) -> torch.Tensor:
    """``T(-kx, -ky, -kz)*`` for the listed rfft columns ``kx``: the values at ``-kx``."""
    index = _friedel_index(table.shape[-2], table.device)
    picked = table[..., list(columns)]
    return picked.index_select(-3, index).index_select(-2, index).conj()


def _table_margin(interpolation: str) -> tuple[int, int]:
    """Samples the interpolation taps reach (before, after) the stored index range on each axis.

    The largest coordinate is ``P`` (``+P/2``, beyond the last stored ``ky``/``kz`` index
    ``P - 1``) and ``P/2`` along ``kx``; cubic taps reach one sample below and two above.
    """
    return (1, 2) if interpolation == "cubic" else (0, 1)


def _extend_table(table: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Pad the centred rfft table with the values its taps may reach outside the stored range.

    Along ``kx`` the values come from Friedel symmetry (``kx = -1 … -before`` are the conjugates
    of ``kx = 1 … before`` at ``(-ky, -kz)``; beyond ``kx = P/2`` the spectrum repeats with
    period ``P``, so ``kx = P/2 + j`` holds ``T(P/2 - j, -ky, -kz)*``). Along ``ky`` and ``kz``
    the transform of the padded box is periodic with period ``P``: the planes wrap around. So
    ``+P/2`` (index ``P``) reads the stored ``-P/2`` sample instead of zero, which keeps the band
    edge symmetric.
    """
    half = table.shape[-1] - 1  # P/2
    parts = []
    if before:
        parts.append(_friedel_columns(table, range(before, 0, -1)))  # kx = -before … -1
    parts.append(table)
    if after:
        parts.append(_friedel_columns(table, range(half - 1, half - 1 - after, -1)))  # kx = P/2 + 1 …
    table = torch.cat(parts, dim=-1)
    for dim in (-3, -2):
        size = table.shape[dim]
        table = torch.cat(
            [table.narrow(dim, size - before, before), table, table.narrow(dim, 0, after)], dim=dim
        )
    return table


def _fold_table(grid: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Adjoint of :func:`_extend_table`: add every margin sample onto the stored sample it copies."""
    for dim in (-3, -2):
        size = grid.shape[dim] - before - after
        inner = grid.narrow(dim, before, size).clone()
        if before:
            inner.narrow(dim, size - before, before).add_(grid.narrow(dim, 0, before))
        if after:
            inner.narrow(dim, 0, after).add_(grid.narrow(dim, before + size, after))
        grid = inner
    half = grid.shape[-1] - before - after - 1
    out = grid[..., before : before + half + 1].clone()
    index = _friedel_index(grid.shape[-2], grid.device)
    margins = []
    if before:
        margins.append((grid[..., :before], list(range(before, 0, -1))))
    if after:
        margins.append((grid[..., before + half + 1 :], list(range(half - 1, half - 1 - after, -1))))
    for values, columns in margins:
        partner = values.index_select(-3, index).index_select(-2, index).conj()
        for j, column in enumerate(columns):
            out[..., column] += partner[..., j]
    return out


def _rfft_image_shape(slices_shape: Sequence[int]) -> tuple[int, int]:
    h, wr = int(slices_shape[-2]), int(slices_shape[-1])
    if wr != h // 2 + 1:
        raise InputError(f"expected square images in rfft layout (..., N, N//2 + 1), got {tuple(slices_shape)}")
    return h, h


def extract_central_slices_rfft(
    volume_ft_centered,
    rotations,
    image_shape: Sequence[int],
    *,
    interpolation: str = "linear",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Central slices ``F_V(Aᵀ (kx, ky, 0))`` of a map's transform: projections in Fourier space.

    Parameters
    ----------
    volume_ft_centered
        complex ``(..., P, P, P//2 + 1)`` table from :func:`prepare_volume_for_projection`.
    rotations
        ``(..., 3, 3)`` matrices ``A`` (map → view frame, RELION convention). Batch dimensions of
        the table and the rotations broadcast.
    image_shape
        ``(h, w)`` of the images, in pixels of the map's voxel size (usually ``(N, N)``).
    interpolation
        ``"linear"`` (trilinear, RELION's default), ``"nearest"`` or ``"cubic"`` (Keys, more
        accurate, ~6× slower); must match the gridding correction the table was prepared with.
    out
        Optional contiguous tensor of the result's shape and dtype to write the result into
        (every entry is overwritten), so that a caller can reuse one buffer batch after batch.

    Returns
    -------
    complex ``(..., h, w//2 + 1)``: the rfft (unshifted, origin of the image at pixel ``N//2``)
    of the projections ``P(x, y) = Σ_z V(Aᵀ(x, y, z))``, zero beyond :func:`band_limit`.
    ``central_slices_to_images`` turns them into images.
    """
    _check_method(interpolation)
    table = _as_data_tensor(volume_ft_centered)
    pad = _check_table(table)
    real_dtype = torch.float64 if table.dtype == torch.complex128 else torch.float32
    rotations = _check_rotations(rotations, table.device, real_dtype)
    image_shape = (int(image_shape[0]), int(image_shape[1]))
    batch = broadcast_shapes(table.shape[:-3], rotations.shape[:-2])
    out_shape = (*batch, image_shape[0], image_shape[1] // 2 + 1)
    if out is not None and (tuple(out.shape) != out_shape or out.dtype != table.dtype or not out.is_contiguous()
                            or out.device != table.device):
        raise InputError(f"out must be a contiguous {table.dtype} tensor of shape {out_shape} on {table.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    if _use_compiled(interpolation, table, rotations):
        return _extract_compiled(table, rotations, image_shape, batch, out=out)
    slices = _extract_torch(table, rotations, image_shape, interpolation, pad)
    return slices if out is None else out.copy_(slices)


def _extract_torch(table: torch.Tensor, rotations: torch.Tensor, image_shape: tuple[int, int], interpolation: str,
                   pad: int) -> torch.Tensor:
    """The central slices by :func:`cryolab.interpolate.sample_grid_3d` (any method, device, autograd)."""
    k2d, index = band_limited_frequencies(image_shape, table.device)
    before, after = _table_margin(interpolation)
    coords, reflected = _slice_table_coordinates(k2d, rotations, pad, before)

    batch = broadcast_shapes(table.shape[:-3], rotations.shape[:-2])
    extended = _extended_table(table, before, after)
    values = sample_grid_3d(extended, coords, method=interpolation)  # (*batch, M)
    values = torch.where(reflected.expand(values.shape), values.conj(), values)

    out = torch.zeros(*batch, image_shape[0] * (image_shape[1] // 2 + 1), dtype=table.dtype, device=table.device)
    out[..., index] = values.expand(*batch, values.shape[-1])
    return out.reshape(*batch, image_shape[0], image_shape[1] // 2 + 1)


def insert_central_slices_rfft(
    slices_ft,
    rotations,
    volume_shape: Sequence[int],
    *,
    pad_factor: float = 2,
    weights=None,
    interpolation: str = "linear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-project central slices into a 3D transform: the adjoint of :func:`extract_central_slices_rfft`.

    Every rfft pixel within :func:`band_limit` is spread onto its interpolation neighbours at
    ``Aᵀ (kx, ky, 0)`` in the table layout of :func:`prepare_volume_for_projection` (conjugated
    and reflected where ``kx < 0`` in the map's frame). With real weights ``w`` the result is
    exactly the adjoint: ``Re⟨extract(T), y⟩ = Re⟨T, insert(y)⟩`` for any table ``T``.

    Parameters
    ----------
    slices_ft
        complex ``(..., N, N//2 + 1)`` unshifted rfft images (e.g. ``rfft_centered(images)``
        times the CTF).
    rotations
        ``(..., 3, 3)`` matrices ``A``; batch dimensions broadcast with those of ``slices_ft``.
    volume_shape
        ``(N, N, N)``, the real-space shape of the (unpadded) map.
    pad_factor
        As in :func:`prepare_volume_for_projection`; the grids have ``P = padded_size(N,
        pad_factor)`` samples per axis.
    weights
        Optional real ``(..., N, N//2 + 1)`` per-pixel weights (e.g. CTF²) spread into the
        weight grid; by default each pixel has weight 1, so the weight grid counts the
        interpolation weight each table sample received.
    interpolation
        ``"linear"``, ``"nearest"`` or ``"cubic"``.

    Returns
    -------
    data
        complex ``(P, P, P//2 + 1)``: the sum over all batch dimensions of the inserted slices.
    weight
        real ``(P, P, P//2 + 1)``: the inserted weights.

    Notes
    -----
    Layout: as :func:`prepare_volume_for_projection` (``kz``, ``ky`` centred at ``P//2``, ``kx``
    rfft half). To return to real space: ``ifftshift`` the ``kz``, ``ky`` axes, ``irfftn`` with
    ``s = (P, P, P)``, ``fftshift``, crop the central ``N³`` (``P//2`` ↔ ``N//2``) and divide by
    :func:`gridding_correction` — i.e. ``irfft_centered(rfft_ifftshift(grid, 3), (P, P, P))``.
    The kx = 0 plane receives both members of each Friedel pair from the image's kx = 0 column;
    it is Hermitian only up to those duplicates, so reconstructions symmetrise it (as RELION's
    ``enforceHermitianSymmetry``) or rely on ``irfftn`` to do so.
    """
    _check_method(interpolation)
    slices_ft = _as_data_tensor(slices_ft)
    if not slices_ft.is_complex():
        slices_ft = slices_ft.to(torch.complex128 if slices_ft.dtype == torch.float64 else torch.complex64)
    real_dtype = torch.float64 if slices_ft.dtype == torch.complex128 else torch.float32
    rotations = _check_rotations(rotations, slices_ft.device, real_dtype)
    volume_shape = tuple(int(s) for s in volume_shape)
    if len(volume_shape) != 3 or len(set(volume_shape)) != 1:
        raise InputError(f"volume_shape must be a cube (N, N, N), got {volume_shape}")
    pad = padded_size(volume_shape[0], pad_factor)
    image_shape = _rfft_image_shape(slices_ft.shape)
    if weights is not None:
        weights = as_tensor(weights, dtype=real_dtype, device=slices_ft.device)
    if _use_compiled(interpolation, slices_ft, rotations, *([] if weights is None else [weights])):
        return _insert_compiled(slices_ft, rotations, pad, weights, image_shape)
    k2d, index = band_limited_frequencies(image_shape, slices_ft.device)
    before, after = _table_margin(interpolation)
    coords, reflected = _slice_table_coordinates(k2d, rotations, pad, before)

    batch = broadcast_shapes(slices_ft.shape[:-2], rotations.shape[:-2])
    values = slices_ft.reshape(*slices_ft.shape[:-2], -1)[..., index].expand(*batch, index.numel())
    reflected = reflected.expand(*batch, index.numel())
    values = torch.where(reflected, values.conj(), values)
    coords = coords.expand(*batch, index.numel(), 3).reshape(-1, 3)
    margin = before + after
    grid_shape = (pad + margin, pad + margin, pad // 2 + 1 + margin)
    data, weight = insert_into_grid_3d(values.reshape(-1), coords, grid_shape, method=interpolation)
    if weights is not None:
        w = weights.reshape(*weights.shape[:-2], -1)[..., index].expand(*batch, index.numel())
        weight, _ = insert_into_grid_3d(w.reshape(-1), coords, grid_shape, method=interpolation)
    return _fold_table(data, before, after), _fold_table(weight, before, after)


# --------------------------------------------------------------------------------------------
# Per-image-shape geometry (cached) and the compiled CPU path for linear interpolation
# --------------------------------------------------------------------------------------------
#
# Why a compiled path. Trilinear lookup is memory bound: each slice point reads eight table
# samples, and a table of P = 256 (67 MB) does not fit in cache, so reading the points image after
# image costs a cache miss per tap, whatever the arithmetic (~0.6 ms per 128² image, the same
# order as RELION). Points are therefore visited in table order: every image row is cut into
# short runs of neighbouring pixels ("segments"), the segments of all images of a call are
# bucketed by the (kz, ky) cell of the table they fall in (a counting sort), and the buckets are
# swept in memory order, so that each part of the table is brought into cache once per call
# instead of once per image. Torch's element-wise operators cannot fuse the ~60 operations per
# point that this needs, so the sweep is a small numba kernel (numba is installed with
# umap-learn, a cryolab dependency; compiled once and cached in __pycache__). Where numba is
# missing, for autograd, other devices and the other interpolation methods, and with the
# environment variable CRYOLAB_NUMBA=0, the torch path computes the same values (tests check
# that the two agree).

_SEGMENT_LENGTH = 8  # pixels per segment: spans ~16 table samples, so a segment stays local
_CELL_BITS = 3  # table cells of 8 × 8 (kz, ky) samples are the sort buckets
_MAX_IMAGES_PER_SWEEP = 1024  # bounds the sort buffers (~12 bytes per segment)
_EXTENDED_TABLE_CACHE: list = []  # [(key, table, extended)]: the torch path's padded tables, newest last
_EXTENDED_TABLE_CACHE_SIZE = 2


@functools.lru_cache(maxsize=16)
def _band_limited_frequencies_cached(image_shape: tuple[int, int], device: str):
    k = fftfreq_grid(image_shape, rfft=True, device=device).reshape(-1, 2)
    keep = torch.linalg.vector_norm(k, dim=-1) <= band_limit(image_shape) * (1 + 1e-6)  # rim included
    index = torch.nonzero(keep).squeeze(-1)
    return k[index], index


def band_limited_frequencies(image_shape: Sequence[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rfft pixels of an image that central slices carry: those within :func:`band_limit`.

    Parameters
    ----------
    image_shape
        Real-space image shape ``(h, w)``.
    device
        Device of the results (default CPU).

    Returns
    -------
    frequencies
        float32 ``(M, 2)``, ``(kx, ky)`` in cycles/pixel (``cryolab.fourier.fftfreq_grid``), in
        row-major order of the rfft array (rows ``ky``, then ``kx``).
    index
        int64 ``(M,)`` flat indices of those pixels into the unshifted ``h · (w//2 + 1)`` rfft array.

    Cached per shape and device: treat the returned tensors as read-only.
    """
    image_shape = (int(image_shape[0]), int(image_shape[1]))
    return _band_limited_frequencies_cached(image_shape, str(torch.device(device or "cpu")))


@functools.lru_cache(maxsize=16)
def slice_segments(image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Runs of at most ``_SEGMENT_LENGTH`` consecutive band-limited pixels of one image row:
    ``(first, count)``, indices into the ``(M, 2)`` list of :func:`band_limited_frequencies`."""
    k2d, _ = band_limited_frequencies(image_shape, "cpu")
    ky = k2d[:, 1].numpy()
    row_starts = np.flatnonzero(np.r_[True, ky[1:] != ky[:-1]])
    row_ends = np.r_[row_starts[1:], ky.size]
    first = [np.arange(a, b, _SEGMENT_LENGTH) for a, b in zip(row_starts, row_ends)]
    count = [np.minimum(_SEGMENT_LENGTH, b - f) for f, b in zip(first, row_ends)]
    first, count = np.concatenate(first), np.concatenate(count)
    return first.astype(np.int64), count.astype(np.int64)


def _extended_table(table: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """:func:`_extend_table`, remembered for the last few tables (keyed on memory and version).

    The cache holds a reference to the table itself, so its memory cannot be reused by another
    tensor while the key is live, and any in-place change bumps the version counter."""
    if table.requires_grad:
        return _extend_table(table, before, after)
    key = (table.data_ptr(), tuple(table.shape), tuple(table.stride()), table.dtype, str(table.device),
           table._version, before, after)
    for entry in _EXTENDED_TABLE_CACHE:
        if entry[0] == key:
            return entry[2]
    extended = _extend_table(table, before, after)
    _EXTENDED_TABLE_CACHE.append((key, table, extended))
    del _EXTENDED_TABLE_CACHE[:-_EXTENDED_TABLE_CACHE_SIZE]
    return extended


def _compiled_kernels_enabled() -> bool:
    return os.environ.get("CRYOLAB_NUMBA", "1") != "0" and _numba_kernels() is not None


@functools.lru_cache(maxsize=1)
def _numba_kernels():
    """The compiled sweep kernels, or None where numba is not installed."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    with _NUMBA_BUILD_LOCK:  # threads may reach the first call together (lru_cache does not serialise it)
        return _build_numba_kernels(numba)


_NUMBA_BUILD_LOCK = threading.Lock()


_NUMBA_INLINE = ("_nb_wrap_tap", "_nb_wrapped_value", "_nb_add_tap", "_nb_slice_point", "_nb_lerp8")
_NUMBA_KERNELS = ("_nb_sweep_order", "_nb_extract", "_nb_insert")


def _build_numba_kernels(numba):
    """Compile the ``_nb_*`` functions below (plain Python until then) with numba, in place.

    They are module-level functions so that numba's on-disk cache (``__pycache__``) finds them
    again in the next process; the helpers are rebound first, so that the kernels that call them
    by their global names see compiled functions."""
    module = globals()
    for name in _NUMBA_INLINE:
        if not hasattr(module[name], "py_func"):  # (not compiled by an earlier call)
            module[name] = numba.njit(cache=True, inline="always")(module[name])
    for name in _NUMBA_KERNELS:
        if not hasattr(module[name], "py_func"):
            module[name] = numba.njit(cache=True, nogil=True)(module[name])
    return module["_nb_extract"], module["_nb_insert"]


# The kernels (plain Python functions until _build_numba_kernels compiles them).


def _nb_wrap_tap(base_t, z, y, x, p, w):
    """Flat index of table sample (z, y, x) reached by a tap outside the stored range, and
    whether its value is the conjugate: ky and kz wrap with period P (index P holds the -P/2
    plane), kx beyond P/2 is the Friedel partner of P - kx at (-ky, -kz)."""
    if z < 0:
        z += p
    elif z >= p:
        z -= p
    if y < 0:
        y += p
    elif y >= p:
        y -= p
    conj = x > w - 1
    if conj:
        x = p - x
        z = (p - z) % p
        y = (p - y) % p
    return base_t + (z * p + y) * w + x, conj


def _nb_wrapped_value(table, base_t, z, y, x, p, w):
    i, conj = _nb_wrap_tap(base_t, z, y, x, p, w)
    return table[2 * i], (-table[2 * i + 1] if conj else table[2 * i + 1])


def _nb_add_tap(data, weight, i, conj, wt, vr, vi, pix_w):
    k = np.uint64(2 * i)  # unsigned: no negative-index wrapping
    data[k] += wt * vr
    data[k + np.uint64(1)] += -(wt * vi) if conj else wt * vi
    weight[np.uint64(i)] += wt * pix_w


def _nb_slice_point(kx, ky, a0x, a0y, a0z, a1x, a1y, a1z, pf, o):
    """Table coordinates of Aᵀ (kx, ky, 0), folded onto kx >= 0 (as _slice_table_coordinates)."""
    x = kx * a0x + ky * a1x
    y = kx * a0y + ky * a1y
    z = kx * a0z + ky * a1z
    reflected = x < 0
    if reflected:
        x = -x
        y = -y
        z = -z
    return x * pf, y * pf + o, z * pf + o, reflected


def _nb_sweep_order(rot, kxy, seg_first, seg_count, j0, j1, p, pf, o, keys, count, order):
    """Counting sort of the segments of images j0 … j1-1 by the (kz, ky) table cell of their
    middle pixel; fills ``order`` with ``(image - j0) << bits | segment`` codes."""
    n_seg = seg_first.shape[0]
    bits = 1
    while (1 << bits) < n_seg:
        bits += 1
    n_cell = (p >> _CELL_BITS) + 1
    count[:] = 0
    i = 0
    for j in range(j0, j1):
        for s in range(n_seg):
            m = seg_first[s] + (seg_count[s] >> 1)
            _, y, z, _ = _nb_slice_point(kxy[m, 0], kxy[m, 1], rot[j, 0, 0], rot[j, 0, 1], rot[j, 0, 2],
                                         rot[j, 1, 0], rot[j, 1, 1], rot[j, 1, 2], pf, o)
            zc = min(max(np.int64(z), 0), p) >> _CELL_BITS
            yc = min(max(np.int64(y), 0), p) >> _CELL_BITS
            k = zc * n_cell + yc
            keys[i] = k
            count[k + 1] += 1
            i += 1
    for k in range(count.shape[0] - 1):
        count[k + 1] += count[k]
    i = 0
    for j in range(j0, j1):
        for s in range(n_seg):
            k = keys[i]
            order[count[k]] = ((j - j0) << bits) | s
            count[k] += 1
            i += 1
    return i, bits


def _nb_lerp8(tx, ty, tz, r000, m000, r001, m001, r010, m010, r011, m011, r100, m100, r101, m101, r110, m110,
              r111, m111):
    """Trilinear interpolation of one complex value from its eight taps: along x, then y, then z."""
    r00 = r000 + tx * (r001 - r000)
    m00 = m000 + tx * (m001 - m000)
    r01 = r010 + tx * (r011 - r010)
    m01 = m010 + tx * (m011 - m010)
    r10 = r100 + tx * (r101 - r100)
    m10 = m100 + tx * (m101 - m100)
    r11 = r110 + tx * (r111 - r110)
    m11 = m110 + tx * (m111 - m110)
    r0 = r00 + ty * (r01 - r00)
    m0 = m00 + ty * (m01 - m00)
    r1 = r10 + ty * (r11 - r10)
    m1 = m10 + ty * (m11 - m10)
    return r0 + tz * (r1 - r0), m0 + tz * (m1 - m0)


def _nb_extract(table, p, w, table_ids, rot, kxy, out_index, seg_first, seg_count, out, out_len, pf, o, group,
                zero_index):
    """out[j, out_index[m]] = T_j(Aⱼᵀ (kxy[m], 0)) by trilinear interpolation, conjugated for
    reflected points; then ``out[j, zero_index] = 0``. ``table`` and ``out`` are flat real views
    of complex arrays.

    A segment whose two ends lie at least half a sample inside the stored range, on one side of
    kx = 0, has all its points there (the coordinates are affine along it): it is read by a loop
    without the per-point range and reflection tests (the same arithmetic, the same values)."""
    n_img = rot.shape[0]
    n_seg = seg_first.shape[0]
    count = np.empty(((p >> _CELL_BITS) + 1) ** 2 + 1, np.int64)
    keys = np.empty(min(group, n_img) * n_seg, np.int32)
    order = np.empty(min(group, n_img) * n_seg, np.int64)
    pw = p * w
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    for j0 in range(0, n_img, group):
        j1 = min(j0 + group, n_img)
        total, bits = _nb_sweep_order(rot, kxy, seg_first, seg_count, j0, j1, p, pf, o, keys, count, order)
        mask = (1 << bits) - 1
        for q in range(total):
            j = j0 + (order[q] >> bits)
            s = order[q] & mask
            base_t = table_ids[j] * p * pw
            a0x = rot[j, 0, 0]
            a0y = rot[j, 0, 1]
            a0z = rot[j, 0, 2]
            a1x = rot[j, 1, 0]
            a1y = rot[j, 1, 1]
            a1z = rot[j, 1, 2]
            m_first = seg_first[s]
            m_last = m_first + seg_count[s] - 1
            xa, ya, za, ra = _nb_slice_point(kxy[m_first, 0], kxy[m_first, 1], a0x, a0y, a0z, a1x, a1y, a1z, pf, o)
            xb, yb, zb, rb = _nb_slice_point(kxy[m_last, 0], kxy[m_last, 1], a0x, a0y, a0z, a1x, a1y, a1z, pf, o)
            if (ra == rb and min(xa, xb) >= 0.5 and max(xa, xb) < w - 1.5 and min(ya, yb) >= 0.5
                    and max(ya, yb) < p - 1.5 and min(za, zb) >= 0.5 and max(za, zb) < p - 1.5):
                # x · (±pf) is the reflected coordinate of _nb_slice_point, rounded alike
                sign = -pf if ra else pf
                conj = np.float32(-1.0) if ra else np.float32(1.0)
                ky = kxy[m_first, 1]
                out_base = np.uint64(2 * j * out_len)
                for m_signed in range(m_first, m_last + 1):
                    m = np.uint64(m_signed)  # (unsigned indices: no negative-index checks in the inner loop)
                    kx = kxy[m, np.uint64(0)]
                    x = (kx * a0x + ky * a1x) * sign
                    y = (kx * a0y + ky * a1y) * sign + o
                    z = (kx * a0z + ky * a1z) * sign + o
                    fx = np.floor(x)
                    fy = np.floor(y)
                    fz = np.floor(z)
                    i00 = np.uint64(2 * (base_t + (np.int64(fz) * p + np.int64(fy)) * w + np.int64(fx)))
                    i01 = i00 + np.uint64(2 * w)
                    i10 = i00 + np.uint64(2 * pw)
                    i11 = i10 + np.uint64(2 * w)
                    vr, vi = _nb_lerp8(x - fx, y - fy, z - fz,
                                       table[i00], table[i00 + one], table[i00 + two], table[i00 + three],
                                       table[i01], table[i01 + one], table[i01 + two], table[i01 + three],
                                       table[i10], table[i10 + one], table[i10 + two], table[i10 + three],
                                       table[i11], table[i11 + one], table[i11 + two], table[i11 + three])
                    k = out_base + np.uint64(2) * np.uint64(out_index[m])
                    out[k] = vr
                    out[k + one] = conj * vi
                continue
            for m in range(m_first, m_last + 1):
                x, y, z, reflected = _nb_slice_point(kxy[m, 0], kxy[m, 1], a0x, a0y, a0z, a1x, a1y, a1z, pf, o)
                fx = np.floor(x)
                fy = np.floor(y)
                fz = np.floor(z)
                x0 = np.int64(fx)
                y0 = np.int64(fy)
                z0 = np.int64(fz)
                if x0 < w - 1 and 0 <= y0 and y0 < p - 1 and 0 <= z0 and z0 < p - 1:
                    # rows (z0, y0), (z0, y0+1), (z0+1, …); unsigned: no negative-index wrapping
                    i00 = np.uint64(2 * (base_t + (z0 * p + y0) * w + x0))
                    i01 = i00 + np.uint64(2 * w)
                    i10 = i00 + np.uint64(2 * pw)
                    i11 = i10 + np.uint64(2 * w)
                    r000, m000, r001, m001 = table[i00], table[i00 + one], table[i00 + two], table[i00 + three]
                    r010, m010, r011, m011 = table[i01], table[i01 + one], table[i01 + two], table[i01 + three]
                    r100, m100, r101, m101 = table[i10], table[i10 + one], table[i10 + two], table[i10 + three]
                    r110, m110, r111, m111 = table[i11], table[i11 + one], table[i11 + two], table[i11 + three]
                else:
                    r000, m000 = _nb_wrapped_value(table, base_t, z0, y0, x0, p, w)
                    r001, m001 = _nb_wrapped_value(table, base_t, z0, y0, x0 + 1, p, w)
                    r010, m010 = _nb_wrapped_value(table, base_t, z0, y0 + 1, x0, p, w)
                    r011, m011 = _nb_wrapped_value(table, base_t, z0, y0 + 1, x0 + 1, p, w)
                    r100, m100 = _nb_wrapped_value(table, base_t, z0 + 1, y0, x0, p, w)
                    r101, m101 = _nb_wrapped_value(table, base_t, z0 + 1, y0, x0 + 1, p, w)
                    r110, m110 = _nb_wrapped_value(table, base_t, z0 + 1, y0 + 1, x0, p, w)
                    r111, m111 = _nb_wrapped_value(table, base_t, z0 + 1, y0 + 1, x0 + 1, p, w)
                vr, vi = _nb_lerp8(x - fx, y - fy, z - fz, r000, m000, r001, m001, r010, m010, r011, m011, r100, m100,
                                   r101, m101, r110, m110, r111, m111)
                k = np.uint64(2 * (j * out_len + out_index[m]))
                out[k] = vr
                out[k + one] = -vi if reflected else vi
    for j in range(n_img):
        for i in range(zero_index.shape[0]):
            k = np.uint64(2 * (j * out_len + zero_index[i]))
            out[k] = 0
            out[k + one] = 0


def _nb_insert(values, pixel_weights, has_weights, p, w, rot, kxy, in_index, in_len, seg_first, seg_count,
               data, weight, pf, o, one, group):
    """Adjoint of ``_nb_extract`` for one grid: spread each value (conjugated for reflected points)
    onto its eight taps with the trilinear weights; taps outside the stored range are folded
    onto the samples they copy (conjugated for Friedel partners)."""
    n_img = rot.shape[0]
    n_seg = seg_first.shape[0]
    count = np.empty(((p >> _CELL_BITS) + 1) ** 2 + 1, np.int64)
    keys = np.empty(min(group, n_img) * n_seg, np.int32)
    order = np.empty(min(group, n_img) * n_seg, np.int64)
    pw = p * w
    for j0 in range(0, n_img, group):
        j1 = min(j0 + group, n_img)
        total, bits = _nb_sweep_order(rot, kxy, seg_first, seg_count, j0, j1, p, pf, o, keys, count, order)
        mask = (1 << bits) - 1
        for q in range(total):
            j = j0 + (order[q] >> bits)
            s = order[q] & mask
            a0x = rot[j, 0, 0]
            a0y = rot[j, 0, 1]
            a0z = rot[j, 0, 2]
            a1x = rot[j, 1, 0]
            a1y = rot[j, 1, 1]
            a1z = rot[j, 1, 2]
            for m in range(seg_first[s], seg_first[s] + seg_count[s]):
                x, y, z, reflected = _nb_slice_point(kxy[m, 0], kxy[m, 1], a0x, a0y, a0z, a1x, a1y, a1z, pf, o)
                k = 2 * (j * in_len + in_index[m])
                vr = values[k]
                vi = -values[k + 1] if reflected else values[k + 1]
                pix_w = pixel_weights[k >> 1] if has_weights else one
                fx = np.floor(x)
                fy = np.floor(y)
                fz = np.floor(z)
                tx = x - fx
                ty = y - fy
                tz = z - fz
                x0 = np.int64(fx)
                y0 = np.int64(fy)
                z0 = np.int64(fz)
                wz0 = one - tz
                wy0 = one - ty
                wx0 = one - tx
                w00 = wz0 * wy0
                w01 = wz0 * ty
                w10 = tz * wy0
                w11 = tz * ty
                if x0 < w - 1 and 0 <= y0 and y0 < p - 1 and 0 <= z0 and z0 < p - 1:
                    i = (z0 * p + y0) * w + x0
                    _nb_add_tap(data, weight, i, False, w00 * wx0, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + 1, False, w00 * tx, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + w, False, w01 * wx0, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + w + 1, False, w01 * tx, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + pw, False, w10 * wx0, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + pw + 1, False, w10 * tx, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + pw + w, False, w11 * wx0, vr, vi, pix_w)
                    _nb_add_tap(data, weight, i + pw + w + 1, False, w11 * tx, vr, vi, pix_w)
                else:
                    for c in range(8):
                        dz = c >> 2
                        dy = (c >> 1) & 1
                        dx = c & 1
                        wzy = (w11 if dy else w10) if dz else (w01 if dy else w00)
                        i, conj = _nb_wrap_tap(0, z0 + dz, y0 + dy, x0 + dx, p, w)
                        _nb_add_tap(data, weight, i, conj, wzy * (tx if dx else wx0), vr, vi, pix_w)


def _use_compiled(interpolation: str, *tensors: torch.Tensor) -> bool:
    """The compiled sweep serves linear interpolation of CPU data that needs no gradient."""
    return (
        interpolation == "linear"
        and all(t.device.type == "cpu" and not t.requires_grad for t in tensors)
        and _compiled_kernels_enabled()
    )


def _flat_real(x: torch.Tensor) -> np.ndarray:
    """A 1D numpy view of the real and imaginary parts of a contiguous complex CPU tensor."""
    return torch.view_as_real(x.resolve_conj().resolve_neg().contiguous()).reshape(-1).numpy()


@functools.lru_cache(maxsize=16)
def _out_of_band_index(image_shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of the rfft pixels beyond :func:`band_limit` (the complement of the slice points)."""
    _, index = band_limited_frequencies(image_shape, "cpu")
    keep = np.zeros(image_shape[0] * (image_shape[1] // 2 + 1), dtype=bool)
    keep[index.numpy()] = True
    return np.flatnonzero(~keep).astype(np.int64)


def _extract_compiled(table: torch.Tensor, rotations: torch.Tensor, image_shape: tuple[int, int], batch, *,
                      out=None) -> torch.Tensor:
    pad, half_width = table.shape[-2], table.shape[-1]
    real_dtype = torch.float64 if table.dtype == torch.complex128 else torch.float32
    n_tables = math.prod(table.shape[:-3])
    table_ids = torch.arange(n_tables).reshape(table.shape[:-3]).expand(batch).reshape(-1).contiguous()
    rots = rotations.to(real_dtype).expand(*batch, 3, 3).reshape(-1, 3, 3).contiguous()
    k2d, index = band_limited_frequencies(image_shape, "cpu")
    first, count = slice_segments(image_shape)
    out_len = image_shape[0] * (image_shape[1] // 2 + 1)
    if out is None:
        out = torch.zeros(*batch, image_shape[0], image_shape[1] // 2 + 1, dtype=table.dtype)
        zero_index = np.zeros(0, dtype=np.int64)
    else:  # a reused buffer: the kernel also clears the pixels beyond the band limit
        zero_index = _out_of_band_index(image_shape)
    scalar = np.float64 if real_dtype == torch.float64 else np.float32
    extract, _ = _numba_kernels()
    extract(_flat_real(table), pad, half_width, table_ids.numpy(), rots.numpy(), k2d.to(real_dtype).numpy(),
            index.numpy(), first, count, torch.view_as_real(out).reshape(-1).numpy(), out_len, scalar(pad),
            scalar(pad // 2), _MAX_IMAGES_PER_SWEEP, zero_index)
    return out


def _insert_compiled(slices_ft: torch.Tensor, rotations: torch.Tensor, pad: int, weights,
                     image_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    real_dtype = torch.float64 if slices_ft.dtype == torch.complex128 else torch.float32
    batch = broadcast_shapes(slices_ft.shape[:-2], rotations.shape[:-2])
    in_len = image_shape[0] * (image_shape[1] // 2 + 1)
    values = slices_ft.expand(*batch, *slices_ft.shape[-2:]).reshape(-1, in_len)
    rots = rotations.to(real_dtype).expand(*batch, 3, 3).reshape(-1, 3, 3).contiguous()
    has_weights = weights is not None
    if has_weights:
        pixel_weights = weights.to(real_dtype).expand(*batch, *slices_ft.shape[-2:]).reshape(-1).contiguous()
    else:
        pixel_weights = torch.zeros(1, dtype=real_dtype)
    k2d, index = band_limited_frequencies(image_shape, "cpu")
    first, count = slice_segments(image_shape)
    data = torch.zeros(pad, pad, pad // 2 + 1, dtype=slices_ft.dtype)
    weight = torch.zeros(pad, pad, pad // 2 + 1, dtype=real_dtype)
    scalar = np.float64 if real_dtype == torch.float64 else np.float32
    _, insert = _numba_kernels()
    insert(_flat_real(values), pixel_weights.numpy(), has_weights, pad, pad // 2 + 1, rots.numpy(),
           k2d.to(real_dtype).numpy(), index.numpy(), in_len, first, count,
           torch.view_as_real(data).reshape(-1).numpy(), weight.reshape(-1).numpy(), scalar(pad), scalar(pad // 2),
           scalar(1), _MAX_IMAGES_PER_SWEEP)
    return data, weight


# --------------------------------------------------------------------------------------------
# Steps 3 and 4: shifts and back to real space
# --------------------------------------------------------------------------------------------


def apply_shifts_rfft(images_ft, shifts_A, pixel_size_A) -> torch.Tensor:
    """Apply particle origins to images in Fourier space (RELION ``rlnOriginX/YAngst``).

    Convention (docs/conventions.md, "Shifts"): ``image(x) = P(x + origin)``, so the particle
    centre moves to ``N//2 - origin``; in Fourier space ``F_image(k) = F_P(k) · exp(+2πi k·origin)``
    (``k`` in cycles/pixel, ``origin`` in pixels). In an even box the Nyquist factor is the real
    part of the ramp, so the shifted images stay real (``cryolab.fourier.shift``).

    Parameters
    ----------
    images_ft
        complex ``(..., N, N//2 + 1)``, unshifted rfft of square images centred at ``N//2``.
    shifts_A
        ``(..., 2)`` origins ``(x, y)`` in Å; batch dimensions broadcast with the images.
    pixel_size_A
        Pixel size in Å (a number, or a tensor broadcasting with the batch dimensions).

    Returns
    -------
    complex ``(..., N, N//2 + 1)``.
    """
    images_ft = _as_data_tensor(images_ft)
    image_shape = _rfft_image_shape(images_ft.shape)
    shifts_A = as_tensor(shifts_A, device=images_ft.device)
    if shifts_A.dim() < 1 or shifts_A.shape[-1] != 2:
        raise InputError(f"shifts_A must have shape (..., 2) as (x, y), got {tuple(shifts_A.shape)}")
    pixel_size_A = as_tensor(pixel_size_A, device=images_ft.device)
    if torch.any(pixel_size_A <= 0):
        raise InputError("pixel_size_A must be positive")
    shifts_px = shifts_A / pixel_size_A[..., None]
    # image(x) = P(x + origin): a translation of the content by -origin. The ramp is separable,
    # exp(2πi kx ox) · exp(2πi ky oy): two broadcast products instead of an (N, N//2 + 1) ramp.
    # (The outer product first: torch multiplies same-shape complex tensors much faster than it
    # broadcasts them.)
    ramp_y, ramp_x = _separable_ramp(-shifts_px, image_shape, images_ft.device, images_ft.dtype)
    return images_ft * (ramp_y[..., :, None] * ramp_x[..., None, :])


def _separable_ramp(shifts_px: torch.Tensor, image_shape: tuple[int, int], device, dtype):
    """Row and column factors ``(..., h)`` and ``(..., w//2 + 1)`` of
    ``cryolab.fourier.phase_ramp_rfft(shifts_px, (h, w))`` (its Nyquist convention included)."""
    h, w = image_shape
    zero = torch.zeros_like(shifts_px[..., :1])
    ramp_y = phase_ramp_rfft(torch.cat([zero, shifts_px[..., 1:]], dim=-1), (h, 1), device=device)[..., 0]
    ramp_x = phase_ramp_rfft(shifts_px[..., :1], (w,), device=device)
    return ramp_y.to(dtype), ramp_x.to(dtype)


def central_slices_to_images(slices_ft, image_shape: Sequence[int]) -> torch.Tensor:
    """Real-space images from their central slices: inverse rfft, origin moved to ``N//2``.

    Parameters
    ----------
    slices_ft
        complex ``(..., h, w//2 + 1)`` unshifted rfft (e.g. from
        :func:`extract_central_slices_rfft`).
    image_shape
        ``(h, w)``; needed because even and odd ``w`` share the rfft width.

    Returns
    -------
    real ``(..., h, w)`` images, centred at ``(h//2, w//2)``: ``cryolab.fourier.irfft_centered``,
    keeping float64 for complex128 input.
    """
    slices_ft = _as_data_tensor(slices_ft)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or tuple(slices_ft.shape[-2:]) != (image_shape[0], image_shape[1] // 2 + 1):
        raise InputError(f"slices of shape {tuple(slices_ft.shape)} do not match images of shape {image_shape}")
    images = torch.fft.irfftn(slices_ft, s=image_shape, dim=(-2, -1))
    return torch.fft.fftshift(images, dim=(-2, -1))


def _ctf_values(ctf, image_shape, pixel_size_A, device) -> torch.Tensor:
    if isinstance(ctf, (torch.Tensor, np.ndarray)):
        values = as_tensor(ctf, device=device)
        expected = (image_shape[0], image_shape[1] // 2 + 1)
        if values.dim() < 2 or tuple(values.shape[-2:]) != expected:
            raise InputError(
                f"ctf values must have shape (..., {expected[0]}, {expected[1]}) (rfft layout), "
                f"got {tuple(values.shape)}"
            )
        return values
    if pixel_size_A is None:
        raise InputError("a CTF given as parameters needs pixel_size_A")
    from cryolab.ctf import ctf_2d  # same layer as projection; imported only when used

    return as_tensor(ctf_2d(ctf, image_shape, pixel_size_A, rfft=True), device=device)


def project_fourier(
    volume,
    rotations,
    *,
    pad_factor: float = 2,
    interpolation: str = "linear",
    shifts_A=None,
    pixel_size_A: float | None = None,
    ctf=None,
) -> torch.Tensor:
    """Projections of a map by the Fourier-slice theorem (RELION's projector), optionally shifted and CTF-modulated.

    ``image = F⁻¹[ CTF · exp(2πi k·origin) · F_V(Aᵀ (kx, ky, 0)) ]``, band-limited to
    ``|k| <= (N//2)/N`` cycles/pixel; without shifts and CTF the image is the line integral
    ``P(x, y) = Σ_z V(Aᵀ (x, y, z))`` in voxel units. See the module docstring for the steps;
    call them directly to reuse one :func:`prepare_volume_for_projection` table for many batches.

    Parameters
    ----------
    volume
        Real ``(..., N, N, N)`` map centred at ``N//2``.
    rotations
        ``(..., 3, 3)`` matrices ``A`` (``cryolab.rotations.relion_euler_to_matrix``); batch
        dimensions broadcast with those of ``volume``.
    pad_factor
        Oversampling of the 3D transform (default 2, as RELION).
    interpolation
        ``"linear"`` (default, as RELION), ``"cubic"`` (more accurate, slower) or ``"nearest"``.
    shifts_A
        Optional ``(..., 2)`` origins ``(x, y)`` in Å, RELION's ``rlnOriginX/YAngst``:
        ``image(x) = P(x + origin)``. Needs ``pixel_size_A``.
    pixel_size_A
        Pixel size in Å (for shifts and CTF parameters).
    ctf
        Optional CTF: either its values ``(..., N, N//2 + 1)`` in the unshifted rfft layout, or
        a ``cryolab.ctf.CTFParams`` evaluated with ``ctf_2d(ctf, (N, N), pixel_size_A,
        rfft=True)``. Multiplies the slice on the unpadded ``N × N`` grid, as RELION.

    Returns
    -------
    float32 ``(..., N, N)`` images (float64 for a float64 map) centred at ``N//2``, on the device
    of ``volume``.

    Examples
    --------
    >>> images = project_fourier(volume, relion_euler_to_matrix(angles_deg))  # doctest: +SKIP
    """
    volume = _as_data_tensor(volume)
    table = prepare_volume_for_projection(volume, pad_factor=pad_factor, interpolation=interpolation)
    n = volume.shape[-1]
    slices = extract_central_slices_rfft(table, rotations, (n, n), interpolation=interpolation)
    if shifts_A is not None:
        if pixel_size_A is None:
            raise InputError("shifts_A needs pixel_size_A")
        slices = apply_shifts_rfft(slices, shifts_A, pixel_size_A)
    if ctf is not None:
        slices = slices * _ctf_values(ctf, (n, n), pixel_size_A, slices.device)
    return central_slices_to_images(slices, (n, n))


# --------------------------------------------------------------------------------------------
# Real-space reference projector
# --------------------------------------------------------------------------------------------


def project_real(volume, rotations, *, shifts_A=None, pixel_size_A: float | None = None) -> torch.Tensor:
    """Projections by rotate-and-sum: ``P(x, y) = Σ_z V(Aᵀ (x + ox, y + oy, z))`` with trilinear interpolation.

    A direct, slow reference for :func:`project_fourier`: for every pixel, the map is sampled
    at unit steps along the viewing ray (over the full length ``√3 · N`` of the box diagonal)
    and summed. Trilinear interpolation low-passes the map (by ``sinc²`` per axis at most), so
    the two projectors agree best at low frequencies; the Fourier projector is the more exact
    one for band-limited maps.

    Parameters
    ----------
    volume
        Real ``(..., N, N, N)`` map centred at ``N//2``.
    rotations
        ``(..., 3, 3)`` matrices ``A``; batch dimensions broadcast with those of ``volume``.
    shifts_A
        Optional ``(..., 2)`` origins ``o = (x, y)`` in Å (``image(x) = P(x + o)``), applied
        exactly in real space. Needs ``pixel_size_A``.
    pixel_size_A
        Pixel size in Å.

    Returns
    -------
    float32 ``(..., N, N)`` images (float64 for a float64 map) centred at ``N//2``.
    """
    volume = _as_data_tensor(volume)
    if volume.is_complex() or volume.dim() < 3 or not (volume.shape[-1] == volume.shape[-2] == volume.shape[-3]):
        raise InputError(f"volume must be a real cube (..., N, N, N), got {tuple(volume.shape)} {volume.dtype}")
    n = volume.shape[-1]
    rotations = _check_rotations(rotations, volume.device, volume.dtype)
    batch = broadcast_shapes(volume.shape[:-3], rotations.shape[:-2])
    offsets = torch.zeros(*batch, 2, dtype=volume.dtype, device=volume.device)
    if shifts_A is not None:
        if pixel_size_A is None:
            raise InputError("shifts_A needs pixel_size_A")
        shifts_A = as_tensor(shifts_A, dtype=volume.dtype, device=volume.device)
        if shifts_A.dim() < 1 or shifts_A.shape[-1] != 2:
            raise InputError(f"shifts_A must have shape (..., 2) as (x, y), got {tuple(shifts_A.shape)}")
        offsets = offsets + shifts_A / float(pixel_size_A)

    half_length = int(math.ceil(math.sqrt(3.0) * n / 2)) + 1
    axis = torch.arange(n, dtype=volume.dtype, device=volume.device) - n // 2
    depth = torch.arange(-half_length, half_length + 1, dtype=volume.dtype, device=volume.device)
    zz, yy, xx = torch.meshgrid(depth, axis, axis, indexing="ij")
    view_points = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)  # (Z·N·N, 3) as (x, y, z)

    volumes = volume.expand(*batch, n, n, n).reshape(-1, n, n, n)
    mats = rotations.expand(*batch, 3, 3).reshape(-1, 3, 3)
    shifts = offsets.reshape(-1, 2)
    centre = torch.full((3,), float(n // 2), dtype=volume.dtype, device=volume.device)
    chunk = max(1, _REAL_SPACE_POINTS_PER_CHUNK // view_points.shape[0])
    images = []
    for start in range(0, mats.shape[0], chunk):
        stop = min(start + chunk, mats.shape[0])
        points = view_points.expand(stop - start, -1, -1).clone()
        points[..., :2] += shifts[start:stop, None, :]
        # map coordinates Aᵀ p (p @ A for row vectors), then array indices (x=column, y=row, z=slice)
        coords = points @ mats[start:stop] + centre
        vols = volumes[start:stop] if volumes.shape[0] > 1 else volumes[0]
        samples = sample_grid_3d(vols, coords, method="linear")
        images.append(samples.reshape(stop - start, depth.numel(), n, n).sum(dim=1))
    return torch.cat(images).reshape(*batch, n, n)
