"""Forward and inverse FFTs of images and volumes under cryolab's centring rules.

docs/conventions.md, "Fourier transforms": computation uses unshifted layouts (zero frequency at
index 0); forward transforms are unnormalised and inverses divide by the number of samples
(``norm="backward"``); real-space data are centred at index ``N // 2``, so the helpers for
centred data ``ifftshift`` them first. An object symmetric about ``N // 2`` then has a real
transform, with no phase ramp, for odd and even ``N`` alike.

All functions transform the last ``ndim`` dimensions and broadcast over any leading (batch)
dimensions. Outputs live on the input's device.

References
----------
R. N. Bracewell, *The Fourier Transform and Its Applications*, 3rd ed., McGraw-Hill (2000),
ch. 18 (the discrete Fourier transform and the FFT).
"""

from __future__ import annotations

from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import as_real, check_ndim, spatial_dims


def rfft_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of the real-to-complex transform of a real array of spatial ``shape``.

    The last axis keeps ``w // 2 + 1`` non-negative frequencies; the others are unchanged.
    """
    shape = tuple(int(s) for s in shape)
    return (*shape[:-1], shape[-1] // 2 + 1)


def fftshift(x, ndim: int) -> torch.Tensor:
    """Move the zero frequency (or the origin) from index 0 to index ``N // 2`` on the last ``ndim`` axes."""
    x = as_tensor(x)
    return torch.fft.fftshift(x, dim=spatial_dims(check_ndim(x, ndim)))


def ifftshift(x, ndim: int) -> torch.Tensor:
    """Inverse of :func:`fftshift`: move index ``N // 2`` to index 0 on the last ``ndim`` axes."""
    x = as_tensor(x)
    return torch.fft.ifftshift(x, dim=spatial_dims(check_ndim(x, ndim)))


def rfft_fftshift(x_rfft, ndim: int) -> torch.Tensor:
    """Centre an rfft array: ``fftshift`` every spatial axis except the last (the half axis).

    Parameters
    ----------
    x_rfft
        ``(..., [d,] h, w // 2 + 1)`` array in the unshifted rfft layout.
    ndim
        Number of spatial dimensions (2 or 3).

    Returns
    -------
    Same shape; zero frequency at index ``N // 2`` on the full axes, still 0 on the last axis.
    """
    x_rfft = as_tensor(x_rfft)
    dims = spatial_dims(check_ndim(x_rfft, ndim))[:-1]
    return torch.fft.fftshift(x_rfft, dim=dims) if dims else x_rfft


def rfft_ifftshift(x_rfft, ndim: int) -> torch.Tensor:
    """Inverse of :func:`rfft_fftshift`: back to the unshifted rfft layout."""
    x_rfft = as_tensor(x_rfft)
    dims = spatial_dims(check_ndim(x_rfft, ndim))[:-1]
    return torch.fft.ifftshift(x_rfft, dim=dims) if dims else x_rfft


def rfft_centered(x, ndim: int) -> torch.Tensor:
    """Real-to-complex FFT of real data whose origin is the centre pixel ``N // 2``.

    Computes ``rfftn(ifftshift(x))`` over the last ``ndim`` axes, unnormalised.

    Parameters
    ----------
    x
        Real array ``(..., [d,] h, w)``, centred at ``N // 2`` on every spatial axis.
    ndim
        Number of spatial dimensions (1, 2 or 3); leading dimensions are batch dimensions.

    Returns
    -------
    Complex tensor ``(..., [d,] h, w // 2 + 1)`` in the unshifted rfft layout. Real when ``x``
    is symmetric about its centre (``x[N//2 + i] == x[N//2 - i]``).
    """
    x = as_real(as_tensor(x), "x")
    dims = spatial_dims(check_ndim(x, ndim))
    return torch.fft.rfftn(torch.fft.ifftshift(x, dim=dims), dim=dims)


def irfft_centered(x_rfft, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`rfft_centered`: real data centred at ``N // 2``.

    Parameters
    ----------
    x_rfft
        Complex ``(..., [d,] h, w // 2 + 1)`` in the unshifted rfft layout.
    shape
        Real-space spatial shape ``([d,] h, w)``; needed because ``w`` even and odd give the
        same rfft width. Its length is the number of spatial dimensions.

    Returns
    -------
    Real tensor ``(..., *shape)``, divided by the number of samples (backward norm).
    """
    x_rfft = as_tensor(x_rfft)
    shape = tuple(int(s) for s in shape)
    dims = spatial_dims(check_ndim(x_rfft, len(shape)))
    _check_rfft_matches(x_rfft, shape)
    return torch.fft.fftshift(torch.fft.irfftn(x_rfft, s=shape, dim=dims), dim=dims)


def fft_centered(x, ndim: int) -> torch.Tensor:
    """Full complex FFT of (real or complex) data centred at ``N // 2``: ``fftn(ifftshift(x))``.

    Returns the unshifted layout ``(..., [d,] h, w)``; apply :func:`fftshift` to display it.
    """
    x = as_tensor(x)
    dims = spatial_dims(check_ndim(x, ndim))
    return torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims)


def ifft_centered(x_fft, ndim: int) -> torch.Tensor:
    """Inverse of :func:`fft_centered`: ``fftshift(ifftn(x_fft))``, complex, centred at ``N // 2``.

    Take ``.real`` when the spectrum is known to be Hermitian (the transform of real data).
    """
    x_fft = as_tensor(x_fft)
    dims = spatial_dims(check_ndim(x_fft, ndim))
    return torch.fft.fftshift(torch.fft.ifftn(x_fft, dim=dims), dim=dims)


def _check_rfft_matches(x_rfft: torch.Tensor, shape: tuple[int, ...]) -> None:
    expected = rfft_shape(shape)
    got = tuple(x_rfft.shape[-len(shape):])
    if got != expected:
        raise InputError(f"rfft array has spatial shape {got}, expected {expected} for real shape {shape}")
