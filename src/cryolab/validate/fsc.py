"""Fourier shell correlation between two maps, and the resolution where it crosses a threshold.

Conventions (docs/conventions.md): Fourier shells are ``round(|k| * N)`` with ``k`` in
cycles/pixel, shell ``s`` of a box of ``N`` pixels of ``pixel_size_A`` Å is the spatial
frequency ``s / (N * pixel_size_A)`` 1/Å. Curves run over shells ``0 .. N // 2`` (Nyquist).

The sums run over the samples of the real-to-complex (rfft) half grid, each counted once, as
RELION's ``getFSC`` does (src/fftw.cpp), so the curve equals RELION's to rounding:

    FSC(s) = Σ_{k in s} Re(A(k) · conj(B(k))) / sqrt(Σ_{k in s} |A(k)|² · Σ_{k in s} |B(k)|²)

References
----------
M. van Heel & M. Schatz, J. Struct. Biol. 151, 250-262 (2005) (FSC and thresholds);
P. B. Rosenthal & R. Henderson, J. Mol. Biol. 333, 721-745 (2003) (0.143 threshold, C_ref);
S. H. W. Scheres & S. Chen, Nat. Methods 9, 853-854 (2012) (gold-standard half maps).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import shell_index

__all__ = [
    "fsc",
    "fsc_from_spectra",
    "shell_sample_counts",
    "FSCResolution",
    "fsc_resolution",
    "fsc_resolution_A",
    "fsc_shell_frequencies",
    "full_map_fsc_from_half",
    "fsc_to_truth_from_half",
]


def _check_pair(map_a: torch.Tensor, map_b: torch.Tensor, ndim: int) -> tuple[int, ...]:
    if ndim not in (2, 3):
        raise InputError(f"ndim must be 2 (images, FRC) or 3 (maps, FSC), got {ndim}")
    for name, m in (("map_a", map_a), ("map_b", map_b)):
        if m.is_complex():
            raise InputError(f"{name} must be real, got {m.dtype}")
        if m.dim() < ndim:
            raise InputError(f"{name} needs at least {ndim} dimensions, got shape {tuple(m.shape)}")
    shape_a, shape_b = tuple(map_a.shape[-ndim:]), tuple(map_b.shape[-ndim:])
    if shape_a != shape_b:
        raise InputError(f"the two maps have different boxes: {shape_a} and {shape_b}")
    if len(set(shape_a)) != 1:
        raise InputError(f"FSC shells need a square or cubic box, got {shape_a}")
    return shape_a


def _apply_mask(m: torch.Tensor, mask, shape: tuple[int, ...]) -> torch.Tensor:
    mask = as_tensor(mask, device=m.device).to(m.dtype)
    if tuple(mask.shape[-len(shape):]) != shape:
        raise InputError(f"mask has shape {tuple(mask.shape)}, the maps have box {shape}")
    return m * mask


@functools.lru_cache(maxsize=16)
def _flat_shells_cached(shape: tuple[int, ...], device: str) -> torch.Tensor:
    return shell_index(shape, rfft=True, device=device).flatten()


def _flat_shells(shape: tuple[int, ...], device) -> torch.Tensor:
    """Shell of every rfft half-grid sample, flattened (int64; cached, do not modify)."""
    return _flat_shells_cached(tuple(int(s) for s in shape), str(torch.device(device) if device is not None else "cpu"))


def _shell_sums(values: torch.Tensor, shells: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Sum ``values (..., M)`` over shells ``< n_shells`` in float64; higher shells are dropped."""
    index = shells.clamp(max=n_shells)  # one overflow bin for the corners beyond the last shell
    sums = torch.zeros(*values.shape[:-1], n_shells + 1, dtype=torch.float64, device=values.device)
    sums.index_add_(-1, index, values.to(torch.float64))
    return sums[..., :n_shells]


def fsc_from_spectra(spectrum_a, spectrum_b, shape, *, n_shells: int | None = None) -> torch.Tensor:
    """FSC from two unshifted rfft spectra (``torch.fft.rfftn`` layout) of real maps.

    Parameters
    ----------
    spectrum_a, spectrum_b
        Complex ``(..., *rfft_shape)``; leading dimensions broadcast.
    shape
        Real-space box ``(N, N)`` or ``(N, N, N)``.
    n_shells
        Shells ``0 .. n_shells - 1`` are returned (default ``N // 2 + 1``); samples in higher
        shells (the corners) are ignored, as in RELION.

    Returns
    -------
    float32 ``(..., n_shells)``. A shell where either map has no power is 0.
    """
    spectrum_a, spectrum_b = as_tensor(spectrum_a), as_tensor(spectrum_b)
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    n = shape[0]
    n_shells = n // 2 + 1 if n_shells is None else int(n_shells)
    spectrum_a, spectrum_b = torch.broadcast_tensors(spectrum_a, spectrum_b)
    shells = _flat_shells(shape, spectrum_a.device)
    a = spectrum_a.flatten(start_dim=spectrum_a.dim() - ndim)
    b = spectrum_b.flatten(start_dim=spectrum_b.dim() - ndim)
    # Products in the spectra's precision, sums in float64: a 128³ shell holds ~10⁵ samples and
    # the FSC must match RELION's (double precision) to 1e-4.
    terms = torch.stack([a.real * b.real + a.imag * b.imag, a.real**2 + a.imag**2, b.real**2 + b.imag**2])
    numerator, power_a, power_b = _shell_sums(terms, shells, n_shells)
    denominator = torch.sqrt(power_a * power_b)
    curve = torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(numerator))
    return curve.to(torch.float32)


def fsc(map_a, map_b, *, mask=None, ndim: int = 3) -> torch.Tensor:
    """Fourier shell (ring) correlation of two real maps (images), RELION's way.

    Parameters
    ----------
    map_a, map_b
        Real ``(..., N, N, N)`` maps (or ``(..., N, N)`` images with ``ndim=2``), same box;
        leading dimensions broadcast (one curve per pair).
    mask
        Optional real-space mask ``(N, N, N)`` (or broadcastable), multiplied into both maps
        before the transform (a soft mask in [0, 1]; see :mod:`cryolab.masks`). A masked FSC is
        inflated by the mask's own correlation: see :func:`cryolab.validate.masked_fsc_corrected`.
    ndim
        3 for maps (FSC), 2 for images (FRC).

    Returns
    -------
    float32 ``(..., N // 2 + 1)``: the correlation in shells ``0 .. N // 2`` (Nyquist). Shell
    ``s`` is the frequency ``s / (N * pixel_size_A)`` 1/Å (:func:`fsc_shell_frequencies`).

    Notes
    -----
    Each half-grid sample counts once (the ``kx = 0`` plane is then counted on both its
    halves), exactly as RELION's ``getFSC``; the shell of a sample is ``round(|k| N)``. Because
    the correlation is normalised, the position of the origin and the FFT normalisation do not
    matter.

    References
    ----------
    van Heel & Schatz (2005), J. Struct. Biol. 151, 250; RELION ``getFSC`` (src/fftw.cpp).
    """
    map_a, map_b = as_tensor(map_a), as_tensor(map_b)
    if map_b.device != map_a.device:
        map_b = map_b.to(map_a.device)
    shape = _check_pair(map_a, map_b, ndim)
    if mask is not None:
        map_a, map_b = _apply_mask(map_a, mask, shape), _apply_mask(map_b, mask, shape)
    dims = tuple(range(-ndim, 0))
    return fsc_from_spectra(torch.fft.rfftn(map_a, dim=dims), torch.fft.rfftn(map_b, dim=dims), shape)


def shell_sample_counts(shape, *, n_shells: int | None = None, device=None) -> torch.Tensor:
    """Number of rfft half-grid samples in each shell (the FSC's sample count), int64 ``(n_shells,)``.

    For independent noise the FSC of shell ``s`` has standard deviation close to
    ``1 / sqrt(2 count[s])``, i.e. one over the square root of the number of voxels in the
    whole shell (each half-grid sample adds an independent complex term with two real degrees
    of freedom; the ``kx = 0`` plane repeats its conjugate pairs, so the spread is a little
    larger). van Heel & Schatz (2005) base their threshold curves on this ``1/sqrt(n)``.
    """
    shape = tuple(int(s) for s in shape)
    n = shape[0]
    n_shells = n // 2 + 1 if n_shells is None else int(n_shells)
    shells = _flat_shells(shape, device)
    return torch.bincount(shells[shells < n_shells], minlength=n_shells)


def fsc_shell_frequencies(box_size: int, pixel_size_A: float | None = None, *, n_shells: int | None = None) -> torch.Tensor:
    """Spatial frequency of each FSC shell: ``s / (box_size * pixel_size_A)`` 1/Å, float32 ``(n_shells,)``.

    Without ``pixel_size_A``, cycles/pixel. ``n_shells`` defaults to ``box_size // 2 + 1``.
    """
    n_shells = box_size // 2 + 1 if n_shells is None else int(n_shells)
    if pixel_size_A is not None and not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    scale = box_size * (pixel_size_A if pixel_size_A is not None else 1.0)
    return torch.arange(n_shells, dtype=torch.float32) / scale


@dataclass(frozen=True)
class FSCResolution:
    """Where an FSC curve crosses a threshold, by two rules.

    Attributes
    ----------
    threshold : float
        The FSC value (0.143 for gold-standard half maps, 0.5 for a map against a model).
    shell : int
        RELION's rule: the last shell of the run that starts at the origin with FSC >= threshold
        (RELION stops at the first shell below it). Shell 0 (the mean) is not tested; 0 where
        shell 1 is already below the threshold.
    resolution_A : float
        ``box_size * pixel_size_A / shell`` (``inf`` for shell 0).
    interpolated_shell : float
        Linear interpolation of the crossing between ``shell`` and ``shell + 1``; equal to
        ``shell`` where the curve never drops below the threshold (up to Nyquist).
    interpolated_resolution_A : float
        ``box_size * pixel_size_A / interpolated_shell``.
    frequency_per_A, interpolated_frequency_per_A : float
        The same two crossings as spatial frequencies (1/Å).
    """

    threshold: float
    shell: int
    resolution_A: float
    interpolated_shell: float
    interpolated_resolution_A: float
    frequency_per_A: float
    interpolated_frequency_per_A: float


def _crossing_shells(curves: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Last shell of the initial run >= threshold (int64) and the interpolated crossing.

    Shell 0 (the mean) always passes: it says nothing about resolution, and maps normalised to
    zero mean can have any correlation there.
    """
    below = curves < threshold
    below[..., 0] = False
    n = curves.shape[-1]
    index = torch.arange(n, device=curves.device).expand_as(curves)
    first_below = torch.where(below, index, torch.full_like(index, n)).min(dim=-1).values
    last = first_below - 1
    nxt = first_below.clamp(max=n - 1)
    cur = last.clamp(min=0)
    value_cur = curves.gather(-1, cur[..., None])[..., 0].double()
    value_next = curves.gather(-1, nxt[..., None])[..., 0].double()
    step = (value_cur - threshold) / (value_cur - value_next).clamp_min(1e-12)
    interpolated = last.double() + step.clamp(0.0, 1.0)
    interpolated = torch.where(first_below >= n, last.double(), interpolated)  # never crosses
    return last, interpolated


def fsc_resolution(curve, box_size: int, pixel_size_A: float, threshold: float = 0.143) -> FSCResolution:
    """Both crossings of one FSC curve with ``threshold`` (see :class:`FSCResolution`).

    Parameters
    ----------
    curve
        ``(n_shells,)`` FSC, shell 0 first (as :func:`fsc` returns).
    box_size, pixel_size_A
        The box (pixels) and pixel size (Å) of the maps the curve came from.
    threshold
        0.143 (gold standard, Rosenthal & Henderson 2003) or 0.5.
    """
    curve = as_tensor(curve)
    if curve.dim() != 1:
        raise InputError(f"fsc_resolution takes one curve (n_shells,), got shape {tuple(curve.shape)}")
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    last, interpolated = _crossing_shells(curve, threshold)
    shell, ishell = int(last), float(interpolated)
    extent = box_size * pixel_size_A
    return FSCResolution(
        threshold=float(threshold),
        shell=shell,
        resolution_A=extent / shell if shell > 0 else math.inf,
        interpolated_shell=ishell,
        interpolated_resolution_A=extent / ishell if ishell > 0 else math.inf,
        frequency_per_A=shell / extent,
        interpolated_frequency_per_A=ishell / extent,
    )


def fsc_resolution_A(curve, box_size: int, pixel_size_A: float, threshold: float = 0.143, *, method: str = "last_above") -> torch.Tensor:
    """Resolution (Å) where FSC curves cross ``threshold``.

    Parameters
    ----------
    curve
        ``(..., n_shells)`` FSC curves; leading dimensions are batch dimensions.
    box_size, pixel_size_A
        Box (pixels) and pixel size (Å) of the maps.
    threshold
        FSC threshold, 0.143 for half maps.
    method
        ``"last_above"``: RELION's rule, ``box_size * pixel_size_A / s`` for the last shell
        ``s`` of the run from the origin with FSC >= threshold (shell 0, the mean, is not
        tested); ``"interpolated"``: the linearly interpolated crossing between that shell and
        the next.

    Returns
    -------
    float32 ``(...)`` tensor (0-d for one curve); ``inf`` where no shell beyond 0 passes.
    """
    curve = as_tensor(curve)
    if method not in ("last_above", "interpolated"):
        raise InputError(f"method must be 'last_above' or 'interpolated', got {method!r}")
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    last, interpolated = _crossing_shells(curve, threshold)
    shell = last.double() if method == "last_above" else interpolated
    return (box_size * pixel_size_A / shell).to(torch.float32)


def full_map_fsc_from_half(fsc_half) -> torch.Tensor:
    """FSC the full map would have with a second full map: ``2 F / (1 + F)`` (Spearman-Brown).

    Doubling the data doubles the per-shell SNR; with ``F = SNR / (1 + SNR)`` for a half map
    this is the same expression at ``2 SNR``.
    """
    f = as_tensor(fsc_half)
    return 2 * f / (1 + f)


def fsc_to_truth_from_half(fsc_half) -> torch.Tensor:
    """Expected FSC of the full (two-half average) map against the noise-free truth: ``sqrt(2F/(1+F))``.

    Rosenthal & Henderson's ``C_ref``: for half maps ``truth + independent noise`` the half-map
    FSC is ``F = SNR / (1 + SNR)`` and the full map, with twice the SNR, correlates with the
    truth as ``sqrt(2 SNR / (1 + 2 SNR)) = sqrt(2F / (1 + F))``. So ``F = 0.143`` corresponds
    to 0.5 against the truth. Negative ``F`` gives 0. It is also the FSC weighting applied in
    sharpening (:mod:`cryolab.postprocess`).

    Reference: P. B. Rosenthal & R. Henderson, J. Mol. Biol. 333, 721-745 (2003), eq. 16.
    """
    f = as_tensor(fsc_half).clamp(min=0.0)
    return torch.sqrt(2 * f / (1 + f))
