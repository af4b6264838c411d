"""Integer Fourier shells, radial averages and the shell ↔ resolution conversion.

docs/conventions.md: the shell of a frequency ``k`` (cycles/pixel) in a box of ``N`` pixels is
``round(|k| * N)``. FSC curves and every radial profile in cryolab use these shells. Shell ``s``
of a box of ``N`` pixels of ``pixel_size_A`` Å has spatial frequency ``s / (N * pixel_size_A)``
1/Å, i.e. resolution ``N * pixel_size_A / s`` Å; shell ``N // 2`` is Nyquist.

References
----------
M. van Heel & M. Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151,
250-262 (2005) — shells of one Fourier pixel width.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier.transforms import rfft_shape


def _cubic_box_size(shape: Sequence[int]) -> int:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 2, 3):
        raise InputError(f"shape must have 1 to 3 axes, got {shape}")
    if len(set(shape)) != 1:
        raise InputError(f"integer Fourier shells need a square or cubic box, got shape {shape}")
    return shape[0]


def _integer_frequencies(n: int, *, half: bool, fftshift: bool, device=None) -> torch.Tensor:
    """Frequencies in Fourier pixels (cycles per box) along one axis, as int64.

    ``half``: the rfft axis, ``0 .. n // 2``. Otherwise the full axis in ``torch.fft.fftfreq``
    order (``0, 1, .., -1``, with ``-n/2`` for even ``n``), or centred if ``fftshift``.
    """
    if half:
        return torch.arange(n // 2 + 1, device=device)
    index = torch.arange(n, device=device)
    freqs = torch.where(index < (n + 1) // 2, index, index - n)
    return torch.fft.fftshift(freqs) if fftshift else freqs


def shell_index(shape: Sequence[int], *, rfft: bool = True, fftshift: bool = False, device=None) -> torch.Tensor:
    """Integer Fourier shell ``round(|k| * N)`` of every sample of a Fourier array.

    Parameters
    ----------
    shape
        Real-space shape of a square image ``(N, N)`` or cubic volume ``(N, N, N)``.
    rfft
        If True, the rfft layout (last axis ``N // 2 + 1``); otherwise the full layout.
    fftshift
        If True, the full axes are centred (zero frequency at ``N // 2``). The rfft half axis
        is never shifted.
    device
        Torch device of the result.

    Returns
    -------
    int64 tensor of the Fourier shape. Values run from 0 (DC) to about ``N * sqrt(ndim) / 2``
    in the corners; shell ``N // 2`` is Nyquist.

    Notes
    -----
    ``|k| * N`` is computed exactly from integer frequencies, so there are no rounding ties: the
    square root of an integer is never a half-integer.
    """
    n = _cubic_box_size(shape)
    ndim = len(tuple(shape))
    per_axis = [
        _integer_frequencies(n, half=rfft and axis == ndim - 1, fftshift=fftshift, device=device)
        for axis in range(ndim)
    ]
    mesh = torch.meshgrid(*per_axis, indexing="ij")
    radius_squared = sum(k.to(torch.int64) ** 2 for k in mesh)
    return torch.round(torch.sqrt(radius_squared.to(torch.float64))).to(torch.int64)


def _rfft_hermitian_weights(n: int, device=None) -> torch.Tensor:
    """How many samples of the full spectrum each column of the rfft half axis stands for.

    Column 0 and, for even ``n``, the Nyquist column ``n / 2`` are their own mirror images;
    every other column also represents its conjugate partner at ``-k``.
    """
    weights = torch.full((n // 2 + 1,), 2.0, device=device)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return weights


def radial_average(
    values,
    shape: Sequence[int],
    *,
    rfft: bool = True,
    fftshift: bool = False,
    n_shells: int | None = None,
) -> torch.Tensor:
    """Average of a Fourier-space quantity over each integer shell (a 1D radial profile).

    Parameters
    ----------
    values
        ``(..., *fourier_shape)``: e.g. ``|F|**2`` of an rfft, with any leading batch dimensions.
        Real or complex.
    shape
        Real-space shape ``(N, N)`` or ``(N, N, N)`` of the box the values belong to.
    rfft
        Whether ``values`` is in the rfft layout (last axis ``N // 2 + 1``) or the full layout.
    fftshift
        Whether the full axes of ``values`` are centred.
    n_shells
        Number of shells returned, ``0 .. n_shells - 1``. Default ``N // 2 + 1`` (up to Nyquist);
        samples in higher shells (the corners) are ignored.

    Returns
    -------
    ``(..., n_shells)`` profile, float32 (complex64 for complex values).

    Notes
    -----
    In the rfft layout each sample is weighted by the number of full-spectrum samples it
    represents (2, except the ``kx = 0`` and even-``N`` Nyquist columns), so for a Hermitian
    quantity such as ``|F|**2`` of a real image the profile equals that of the full layout.
    """
    values = as_tensor(values)
    shape = tuple(int(s) for s in shape)
    n = _cubic_box_size(shape)
    ndim = len(shape)
    fourier_shape = rfft_shape(shape) if rfft else shape
    if tuple(values.shape[-ndim:]) != fourier_shape:
        raise InputError(
            f"values have spatial shape {tuple(values.shape[-ndim:])}, expected {fourier_shape} "
            f"for a {'rfft' if rfft else 'full'} array of real shape {shape}"
        )
    n_shells = n // 2 + 1 if n_shells is None else int(n_shells)

    shells = shell_index(shape, rfft=rfft, fftshift=fftshift, device=values.device).flatten()
    weights = torch.ones(fourier_shape, device=values.device)
    if rfft:
        weights = weights * _rfft_hermitian_weights(n, device=values.device)
    weights = weights.flatten()

    keep = shells < n_shells
    shells, weights = shells[keep], weights[keep]
    flat = values.flatten(start_dim=values.dim() - ndim)[..., keep]

    batch_shape = flat.shape[:-1]
    sums = torch.zeros(*batch_shape, n_shells, dtype=flat.dtype, device=values.device)
    sums.index_add_(-1, shells, flat * weights.to(flat.dtype))
    counts = torch.zeros(n_shells, device=values.device).index_add_(0, shells, weights)
    return sums / counts


def radial_profile_to_grid(
    profile,
    shape: Sequence[int],
    *,
    rfft: bool = True,
    fftshift: bool = False,
    fill_value: float = 0.0,
) -> torch.Tensor:
    """Spread a per-shell profile onto a Fourier grid: ``grid[k] = profile[round(|k| N)]``.

    The inverse of :func:`radial_average` for radially symmetric quantities; used to turn a 1D
    curve (an FSC weighting, a noise spectrum) into a filter.

    Parameters
    ----------
    profile
        ``(..., n_shells)``; leading dimensions broadcast as batch dimensions.
    shape
        Real-space shape ``(N, N)`` or ``(N, N, N)``.
    rfft, fftshift
        Layout of the grid returned, as in :func:`shell_index`.
    fill_value
        Value for samples whose shell is ``>= n_shells`` (e.g. the corners beyond Nyquist).

    Returns
    -------
    ``(..., *fourier_shape)`` tensor with the dtype of ``profile``.
    """
    profile = as_tensor(profile)
    if profile.dim() < 1:
        raise InputError("profile must have at least one dimension (the shells)")
    n_shells = profile.shape[-1]
    shells = shell_index(shape, rfft=rfft, fftshift=fftshift, device=profile.device)
    grid = profile[..., shells.clamp(max=n_shells - 1)]
    return torch.where(shells < n_shells, grid, torch.as_tensor(fill_value, dtype=grid.dtype, device=grid.device))


def shell_to_frequency(shell, box_size: int, pixel_size_A: float | None = None) -> torch.Tensor:
    """Spatial frequency of a (possibly fractional) shell: ``shell / (box_size * pixel_size_A)`` 1/Å.

    Without ``pixel_size_A`` the result is in cycles/pixel (fftfreq), ``shell / box_size``.
    A width of ``w`` Fourier pixels converts to frequency units the same way.
    """
    shell = as_tensor(shell)
    scale = box_size if pixel_size_A is None else box_size * _positive(pixel_size_A, "pixel_size_A")
    return shell / scale


def shell_to_resolution_A(shell, box_size: int, pixel_size_A: float) -> torch.Tensor:
    """Resolution in Å of a shell: ``box_size * pixel_size_A / shell`` (``inf`` for shell 0)."""
    shell = as_tensor(shell)
    return box_size * _positive(pixel_size_A, "pixel_size_A") / shell


def resolution_A_to_shell(resolution_A, box_size: int, pixel_size_A: float) -> torch.Tensor:
    """Fractional shell of a resolution: ``box_size * pixel_size_A / resolution_A``.

    Not rounded: round it for the nearest shell, or floor it for the last shell no finer than
    ``resolution_A`` (what RELION does when it converts a resolution to a shell).
    """
    resolution_A = as_tensor(resolution_A)
    return box_size * _positive(pixel_size_A, "pixel_size_A") / resolution_A


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise InputError(f"{name} must be positive, got {value}")
    return float(value)

