"""Exact Fourier-space down- and up-sampling (Fourier cropping and zero padding).

A box of ``N`` samples holds the frequencies ``-N//2 .. (N-1)//2`` (cycles per box). Resampling
to ``M`` samples keeps the frequencies both boxes can hold and sets the others to zero, so a
band-limited function is resampled exactly and ``fourier_crop(fourier_pad(x, M), N) == x``.

The one subtle bin is Nyquist, ``N/2`` for even ``N``, where ``+N/2`` and ``-N/2`` are the same
sample. A real signal's Nyquist term is ``a cos(pi n)``, which in a larger box is the pair
``a/2`` at ``+N/2`` and ``a/2`` at ``-N/2``: padding splits the Nyquist bin in two halves and
cropping to an even ``M`` adds the ``+M/2`` and ``-M/2`` bins into the new Nyquist bin. Each
spatial axis is treated independently (the operations are separable), so a corner bin in 2D is
split in four. The real-space functions work on data centred at ``N // 2`` (they use
:func:`~cryolab.fourier.transforms.rfft_centered`), so the centre pixel stays the centre, and
scale by ``M**ndim / N**ndim`` so that sample values, hence the mean, are preserved.

References
----------
J. O. Smith III, *Mathematics of the Discrete Fourier Transform (DFT)*, 2nd ed., W3K (2007),
§ "Zero padding" and "Interpolation theorem" — including the split of the Nyquist bin.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import as_real, check_ndim, resolve_shape
from cryolab.fourier.transforms import _check_rfft_matches, irfft_centered, rfft_centered


def _resize_full_axis(x: torch.Tensor, dim: int, n: int, m: int) -> torch.Tensor:
    """Crop or zero-pad one full (non-rfft) axis of an unshifted spectrum from ``n`` to ``m``."""
    if m == n:
        return x
    if m < n:
        positive = x.narrow(dim, 0, (m + 1) // 2)  # k = 0 .. (m-1)//2
        negative = x.narrow(dim, n - m // 2, m // 2)  # k = -(m//2) .. -1
        if m % 2 == 0:
            # The new Nyquist bin aliases +m/2 and -m/2: both contributions add up there.
            negative = negative.clone()
            negative.narrow(dim, 0, 1).add_(x.narrow(dim, m // 2, 1))
        return torch.cat([positive, negative], dim=dim)
    positive = x.narrow(dim, 0, (n + 1) // 2)
    negative = x.narrow(dim, n - n // 2, n // 2)
    shape = list(x.shape)
    shape[dim] = m - n
    zeros = x.new_zeros(shape)
    if n % 2 == 0:
        # The old Nyquist bin becomes the symmetric pair +n/2 and -n/2, half each.
        nyquist_half = negative.narrow(dim, 0, 1) / 2
        negative = torch.cat([nyquist_half, negative.narrow(dim, 1, n // 2 - 1)], dim=dim)
        zeros = torch.cat([nyquist_half, zeros.narrow(dim, 1, m - n - 1)], dim=dim)
    return torch.cat([positive, zeros, negative], dim=dim)


def _hermitian_partner(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x[..., -k]`` along ``dims`` (indices taken modulo the length), conjugated."""
    if dims:
        x = torch.roll(torch.flip(x, dims=dims), shifts=(1,) * len(dims), dims=dims)
    return x.conj()


def _resize_half_axis(x: torch.Tensor, n: int, m: int, full_dims: tuple[int, ...]) -> torch.Tensor:
    """Crop or zero-pad the rfft (last) axis for a real length change ``n -> m``."""
    if m == n:
        return x
    if m < n:
        out = x[..., : m // 2 + 1].clone()
        if m % 2 == 0:
            # -m/2 is stored implicitly as the conjugate of (-k_other, +m/2).
            nyquist = x[..., m // 2]
            out[..., m // 2] = nyquist + _hermitian_partner(nyquist, tuple(d + 1 for d in full_dims))
        return out
    out = x.new_zeros((*x.shape[:-1], m // 2 + 1))
    out[..., : n // 2 + 1] = x
    if n % 2 == 0:
        # Half stays at +n/2; the implicit conjugate half is the -n/2 bin.
        out[..., n // 2] = x[..., n // 2] / 2
    return out


def _resize_rfft(x_rfft: torch.Tensor, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> torch.Tensor:
    ndim = len(shape)
    full_dims = tuple(range(-ndim, -1))
    out = x_rfft
    for dim, n, m in zip(full_dims, shape[:-1], new_shape[:-1]):
        out = _resize_full_axis(out, dim, n, m)
    return _resize_half_axis(out, shape[-1], new_shape[-1], full_dims)


def _shapes(x: torch.Tensor, new_size, ndim) -> tuple[tuple[int, ...], tuple[int, ...]]:
    new_shape = resolve_shape(new_size, ndim)
    old_shape = tuple(x.shape[-check_ndim(x, len(new_shape)):])
    return old_shape, new_shape


def fourier_crop_rfft(x_rfft, shape: Sequence[int], new_size: int | Sequence[int]) -> torch.Tensor:
    """Keep the frequencies of a smaller box, folding the Nyquist bins (unshifted rfft layout).

    Parameters
    ----------
    x_rfft
        ``(..., [d,] h, w // 2 + 1)`` rfft of a real array of spatial ``shape``.
    shape
        Real-space shape ``([d,] h, w)`` of the input.
    new_size
        Smaller real-space box (int or per-axis), each length ``<=`` the old one.

    Returns
    -------
    rfft of the new shape. Coefficients are not rescaled: multiply by ``prod(new)/prod(old)``
    to keep real-space sample values (as :func:`fourier_crop` does).
    """
    x_rfft = as_tensor(x_rfft)
    shape = tuple(int(s) for s in shape)
    new_shape = resolve_shape(new_size, len(shape))
    _check_rfft_matches(x_rfft, shape)
    if any(m > n for m, n in zip(new_shape, shape)):
        raise InputError(f"fourier_crop: new shape {new_shape} is larger than {shape}; use fourier_pad")
    return _resize_rfft(x_rfft, shape, new_shape)


def fourier_pad_rfft(x_rfft, shape: Sequence[int], new_size: int | Sequence[int]) -> torch.Tensor:
    """Zero-pad an (unshifted) rfft to a larger box, splitting even-box Nyquist bins in halves.

    Parameters and scaling as in :func:`fourier_crop_rfft`, with each new length ``>=`` the old.
    """
    x_rfft = as_tensor(x_rfft)
    shape = tuple(int(s) for s in shape)
    new_shape = resolve_shape(new_size, len(shape))
    _check_rfft_matches(x_rfft, shape)
    if any(m < n for m, n in zip(new_shape, shape)):
        raise InputError(f"fourier_pad: new shape {new_shape} is smaller than {shape}; use fourier_crop")
    return _resize_rfft(x_rfft, shape, new_shape)


def _fourier_resize(x: torch.Tensor, old_shape, new_shape) -> torch.Tensor:
    spectrum = _resize_rfft(rfft_centered(x, len(old_shape)), old_shape, new_shape)
    value_scale = math.prod(new_shape) / math.prod(old_shape)
    return irfft_centered(spectrum, new_shape) * value_scale


def fourier_crop(x, new_size: int | Sequence[int], *, ndim: int | None = None) -> torch.Tensor:
    """Downsample real data by Fourier cropping (ideal low-pass at the new Nyquist, then resample).

    Parameters
    ----------
    x
        Real ``(..., [d,] h, w)`` data centred at ``N // 2``; leading dimensions are a batch.
    new_size
        Smaller box: an int (then ``ndim`` is required) or one length per spatial axis.
    ndim
        Number of spatial dimensions when ``new_size`` is an int.

    Returns
    -------
    ``(..., *new_shape)`` float tensor. The pixel size grows by ``N / M``; the centre ``N // 2``
    maps to ``M // 2``; the mean is preserved. A function band-limited to the new box is
    sampled exactly on the new grid.
    """
    x = as_real(as_tensor(x), "x")
    old_shape, new_shape = _shapes(x, new_size, ndim)
    if any(m > n for m, n in zip(new_shape, old_shape)):
        raise InputError(f"fourier_crop: new shape {new_shape} is larger than {old_shape}; use fourier_pad")
    return _fourier_resize(x, old_shape, new_shape)


def fourier_pad(x, new_size: int | Sequence[int], *, ndim: int | None = None) -> torch.Tensor:
    """Upsample real data by zero padding its spectrum (band-limited, i.e. sinc, interpolation).

    Parameters and returns as in :func:`fourier_crop`, with each new length ``>=`` the old one;
    the pixel size shrinks by ``N / M``. The input samples are reproduced exactly at the points
    the two grids share, and ``fourier_crop(fourier_pad(x, M), N)`` returns ``x``.
    """
    x = as_real(as_tensor(x), "x")
    old_shape, new_shape = _shapes(x, new_size, ndim)
    if any(m < n for m, n in zip(new_shape, old_shape)):
        raise InputError(f"fourier_pad: new shape {new_shape} is smaller than {old_shape}; use fourier_crop")
    return _fourier_resize(x, old_shape, new_shape)


def fourier_resample(
    x, new_size: int | Sequence[int], pixel_size_A: float, *, ndim: int | None = None
) -> tuple[torch.Tensor, float]:
    """Resample real data to a new box by Fourier crop or pad; return it with its pixel size.

    Parameters
    ----------
    x
        Real ``(..., [d,] h, w)`` data centred at ``N // 2``, square/cubic (one pixel size).
    new_size
        New box: an int (then ``ndim`` is required) or one length per axis, all equal.
    pixel_size_A
        Input pixel size in Å.
    ndim
        Number of spatial dimensions when ``new_size`` is an int.

    Returns
    -------
    (resampled, new_pixel_size_A) with ``new_pixel_size_A = pixel_size_A * N / M``: the box
    keeps its physical size.
    """
    x = as_real(as_tensor(x), "x")
    old_shape, new_shape = _shapes(x, new_size, ndim)
    if len(set(old_shape)) != 1 or len(set(new_shape)) != 1:
        raise InputError(f"fourier_resample needs square/cubic boxes, got {old_shape} -> {new_shape}")
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    new_pixel_size_A = float(pixel_size_A) * old_shape[0] / new_shape[0]
    return _fourier_resize(x, old_shape, new_shape), new_pixel_size_A
