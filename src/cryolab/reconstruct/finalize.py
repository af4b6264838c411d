"""From back-projected data and weight grids to a map: the "reduce" step of reconstruction.

1. **Friedel symmetrisation** of the ``kx = 0`` plane: the rfft half grid stores both ``k`` and
   ``-k`` there, and each received only the slice points on one side of it; adding each to the
   conjugate of its partner (weights likewise) uses all of them (RELION's
   ``BackProjector::enforceHermitianSymmetry``).
2. **Regularised division** on the padded grid,

       F(k) = data(k) / (weight(k) + τ⁻²(k)),        τ⁻²(k) = W̄(s) / (T · SSNR(s)),

   where ``s = round(|k| N)`` is the Fourier shell, ``W̄(s)`` the mean of the weight over the
   shell and ``SSNR(s)`` the spectral signal-to-noise ratio of the data in that shell: a
   Wiener filter, the MAP estimate of Scheres (2012) with a Gaussian prior of power ``τ²``.
   Two ways to choose ``SSNR``:

   - a constant, ``wiener_constant = 1 / SSNR`` (``τ⁻² = c · W̄(s)``; small ``c`` approaches the
     plain ratio ``data / weight``);
   - from the FSC of independently refined half maps, as RELION does in ``relion_refine``
     (``BackProjector::updateSSNRarrays``): ``SSNR = F / (1 - F)`` with ``F`` the half-map FSC
     clipped to ``[0.001, 0.999]`` for a half map, and ``F' = sqrt(2F / (1 + F))`` in place of
     ``F`` for the map of both halves (twice the data; :func:`ssnr_from_fsc`). ``T`` is RELION's
     ``tau2_fudge`` (> 1 trusts the data more). RELION writes ``τ² = SSNR · σ²`` with
     ``σ² = 1 / mean_s(pad³ · weight)`` and adds ``1 / (pad³ τ²)``: the same ``W̄(s) / SSNR``.

   For comparison, ``method="relion"`` reproduces what ``relion_reconstruct`` does by default
   (no regularisation, ``--iter 10``): iterative density-compensation weights (Pipe & Menon
   1999, eq. 14; Matej 2001) found by repeatedly convolving ``weight × w`` with the Fourier
   transform of a Kaiser–Bessel blob (radius 3.8 padded voxels, α = 15, order 0) and dividing, then
   ``F = data · w``. It costs two padded 3D FFTs per iteration. On the same 2 000 noisy particles
   it gives RELION's own map to an FSC of 0.999 at every shell (``benchmarks/reconstruct.py``
   data); the Wiener division with the FSC-derived SSNR is as close to the truth or closer
   (the smoothed weights of the iterations help noisy voxels about as much as the SSNR term
   does) for a fraction of the cost.
3. **Back to real space**: inverse FFT of the padded grid, crop of the central ``N³`` voxels and
   division by the gridding correction (``sinc²(x/P)`` per axis for trilinear insertion,
   ``sinc(x/P)`` for nearest neighbour, :func:`cryolab.projection.gridding_correction`): dividing
   by the weights leaves the data convolved with the interpolation kernel in Fourier space,
   i.e. multiplied by the kernel's transform in real space.
4. **Corners**: outside the sphere of radius ``N/2`` the map is replaced by its mean there, with
   a 3-voxel raised-cosine edge (RELION's ``softMaskOutsideMap``, applied by ``relion_reconstruct``
   and ``relion_refine`` alike). The corners hold only noise and interpolation ghosts; leaving
   them would double the noise a map carries and lower its FSC with anything.

References
----------
S. H. W. Scheres, J. Mol. Biol. 415 (2012) 406 (MAP reconstruction, eq. 8–12) and J. Struct. Biol.
180 (2012) 519; J. G. Pipe & P. Menon, Magn. Reson. Med. 41 (1999) 179; S. Matej & R. M. Lewitt,
IEEE Trans. Med. Imaging 15 (1996) 68 (Kaiser–Bessel blobs); RELION ``src/backprojector.cpp``.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.projection import band_limit, gridding_correction
from cryolab.reconstruct.backproject import (_KERNEL_LOCK, PartialReconstruction, _numba, _numba_enabled,
                                              _single_threaded)

__all__ = [
    "DEFAULT_WIENER_CONSTANT",
    "FINALIZE_METHODS",
    "finalize",
    "mask_outside_sphere",
    "regularised_division",
    "relion_gridding_weights",
    "ssnr_from_fsc",
    "table_to_map",
]

#: Default ``1 / SSNR`` of :func:`finalize`: enough to keep sparsely sampled voxels from blowing
#: up, small enough to leave noise-free data unchanged to ~0.1 %.
DEFAULT_WIENER_CONSTANT = 1e-3

FINALIZE_METHODS = ("wiener", "relion")

_NUMPY_FFT_IN_PLACE = int(np.__version__.split(".")[0]) >= 2  # single-precision transforms with out=


# --------------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------------


def _friedel_index(pad: int, device) -> torch.Tensor:
    return (pad - torch.arange(pad, device=device)) % pad


def _symmetrised_kx0_planes(data: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kx = 0`` planes with every sample added to its Friedel partner (conjugated for data).

    Returns new ``(P, P)`` planes; the grids are not modified.
    """
    index = _friedel_index(weight.shape[-2], weight.device)
    plane_d, plane_w = data[..., 0], weight[..., 0]
    partner_d = plane_d.index_select(-2, index).index_select(-1, index).conj()
    partner_w = plane_w.index_select(-2, index).index_select(-1, index)
    return plane_d + partner_d, plane_w + partner_w


def _symmetrise_kx0(data: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the grids with the ``kx = 0`` plane Friedel-symmetrised (:func:`_symmetrised_kx0_planes`)."""
    plane_d, plane_w = _symmetrised_kx0_planes(data, weight)
    data, weight = data.clone(), weight.clone()
    data[..., 0], weight[..., 0] = plane_d, plane_w
    return data, weight


def _padded_shells(pad: int, box_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell ``round(|k| N)`` (int32) of every sample of the centred rfft table and the in-band mask.

    ``|k|`` in cycles/voxel of the map is the table index distance from the origin divided by
    ``P``; samples beyond :func:`cryolab.projection.band_limit` are outside the band and get the
    shell index ``N//2 + 1`` (one past the last), so that per-shell tables can hold a value for
    them. Cached: the same grid serves both half maps and the full map (threads finalising maps
    side by side wait for one computation).
    """
    with _SHELLS_LOCK, _single_threaded():
        return _padded_shells_cached(int(pad), int(box_size), torch.device(device or "cpu"))


_SHELLS_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _padded_shells_cached(pad: int, box_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    kz = torch.arange(pad, device=device, dtype=torch.float32) - pad // 2
    kx = torch.arange(pad // 2 + 1, device=device, dtype=torch.float32)
    shells = torch.empty(pad, pad, pad // 2 + 1, dtype=torch.int32, device=device)
    inside = torch.empty(pad, pad, pad // 2 + 1, dtype=torch.bool, device=device)
    radius2_yx = kz[:, None] ** 2 + kx[None, :] ** 2  # exact integers
    limit = (band_limit((box_size, box_size)) * pad) ** 2 * (1 + 2e-6)
    for z in range(pad):  # plane by plane: no 3D temporaries
        radius2 = kz[z] ** 2 + radius2_yx
        torch.le(radius2, limit, out=inside[z])
        plane = torch.round(torch.sqrt(radius2) * (box_size / pad)).to(torch.int32)
        shells[z] = plane.masked_fill_(~inside[z], box_size // 2 + 1)
    return shells, inside


def _shell_mean(values: torch.Tensor, shells: torch.Tensor, n_shells: int, *, plane0=None) -> torch.Tensor:
    """Mean of ``values`` over each shell ``0 .. n_shells - 1`` (shells from :func:`_padded_shells`).

    ``plane0``, if given, replaces the ``kx = 0`` plane of ``values`` (the Friedel-symmetrised one).
    On the compiled path: one pass over the grid, summing in float64.
    """
    if _finalize_kernels_apply(values):
        sums = np.zeros(n_shells + 1, dtype=np.float64)
        counts = np.zeros(n_shells + 1, dtype=np.int64)
        _finalize_kernels()[0](values.numpy(), shells.numpy(), sums, counts)
        sums, counts = torch.from_numpy(sums), torch.from_numpy(counts)
    else:
        sums = torch.zeros(n_shells + 1, dtype=values.dtype, device=values.device)
        sums.index_add_(0, shells.reshape(-1), values.reshape(-1))
        counts = torch.bincount(shells.reshape(-1), minlength=n_shells + 1)
    if plane0 is not None:
        sums.index_add_(0, shells[..., 0].reshape(-1), (plane0 - values[..., 0]).reshape(-1).to(sums.dtype))
    return (sums.double() / counts.clamp_min(1))[:n_shells].to(values.dtype)


# --------------------------------------------------------------------------------------------
# Compiled kernels for the passes over the whole padded grid (numba, as the back-projection's):
# torch needs several passes and temporaries for each; ``CRYOLAB_NUMBA=0`` uses those instead.


def _nb_shell_sums(values, shells, sums, counts):
    for z in range(values.shape[0]):
        for y in range(values.shape[1]):
            for x in range(values.shape[2]):
                s = shells[z, y, x]
                sums[s] += values[z, y, x]
                counts[s] += 1


def _nb_divide_by_shell(data, weight, shells, per_shell, factor, out):
    zero = factor[0] * 0  # 0 of the output type
    for z in range(data.shape[0]):
        for y in range(data.shape[1]):
            f = factor[z] * factor[y]
            for x in range(data.shape[2]):
                d = weight[z, y, x] + per_shell[shells[z, y, x]]
                out[z, y, x] = data[z, y, x] * (f / d) if d > 0 and d < np.inf else zero


_FINALIZE_KERNELS: list = []


def _finalize_kernels():
    """``(shell sums, division)`` compiled (loaded from numba's on-disk cache after the first run)."""
    with _KERNEL_LOCK:
        if not _FINALIZE_KERNELS:
            jit = _numba().njit(cache=True, nogil=True)
            _FINALIZE_KERNELS.extend([jit(_nb_shell_sums), jit(_nb_divide_by_shell)])
        return _FINALIZE_KERNELS


def _finalize_kernels_apply(*grids: torch.Tensor) -> bool:
    return _numba_enabled() and all(g.device.type == "cpu" and not g.requires_grad for g in grids)


def _divide_by_shell(data: torch.Tensor, weight: torch.Tensor, shells: torch.Tensor, per_shell: torch.Tensor,
                     factor: torch.Tensor) -> torch.Tensor:
    """``data / (weight + per_shell[shells]) · factor[kz] · factor[ky]``, 0 where the denominator
    is 0 or infinite (:func:`_divide`)."""
    if not _finalize_kernels_apply(data, weight, per_shell):
        return _divide(data, weight, per_shell[shells]) * (factor[:, None, None] * factor[None, :, None])
    out = torch.empty(data.shape, dtype=data.dtype)
    _finalize_kernels()[1](data.numpy(), weight.numpy(), shells.numpy(), per_shell.numpy(),
                           factor.to(data.dtype).numpy(), out.numpy())
    return out


# --------------------------------------------------------------------------------------------
# SSNR and regularised division
# --------------------------------------------------------------------------------------------


def ssnr_from_fsc(fsc, *, whole_map: bool = False, tau2_fudge: float = 1.0) -> torch.Tensor:
    """Spectral SNR per shell from a half-map FSC, as RELION's ``updateSSNRarrays``.

    Parameters
    ----------
    fsc
        ``(n_shells,)`` FSC between two half maps (``cryolab.validate.fsc``).
    whole_map
        False: the SSNR of one half map, ``F / (1 - F)``. True: of the map of both halves,
        with ``F`` replaced by ``sqrt(2F / (1 + F))`` (RELION's "is_whole_instead_of_half",
        ``cryolab.validate.fsc_to_truth_from_half``).
    tau2_fudge
        RELION's ``T``: the SSNR is multiplied by it.

    Returns
    -------
    float32 ``(n_shells,)``, with ``F`` clipped to ``[0.001, 0.999]`` first (so the SSNR lies in
    ``[0.001, 999] · T``).
    """
    from cryolab.validate import fsc_to_truth_from_half

    f = as_tensor(fsc).double().clamp(min=0.001)
    if whole_map:
        f = fsc_to_truth_from_half(f).double()
    f = f.clamp(max=0.999)
    if not tau2_fudge > 0:
        raise InputError(f"tau2_fudge must be positive, got {tau2_fudge}")
    return (tau2_fudge * f / (1 - f)).to(torch.float32)


def _regulariser_per_shell(weight: torch.Tensor, shells: torch.Tensor, box_size: int, *, wiener_constant,
                           ssnr, plane0=None) -> torch.Tensor:
    """``τ⁻²`` per shell, ``W̄(s) · c`` or ``W̄(s) / SSNR(s)``, with ``inf`` appended for out-of-band samples."""
    n_shells = box_size // 2 + 1
    mean_weight = _shell_mean(weight, shells, n_shells, plane0=plane0).double()
    if ssnr is not None:
        ssnr = as_tensor(ssnr, device=weight.device).reshape(-1).double()
        if ssnr.numel() < 1 or bool((ssnr < 0).any()) or not bool(torch.isfinite(ssnr).all()):
            raise InputError("ssnr must be a non-empty, finite, non-negative per-shell profile")
        # shells the profile does not reach take its last value
        ssnr = torch.cat([ssnr, ssnr[-1:].expand(max(0, n_shells - ssnr.numel()))])[:n_shells]
        per_shell = mean_weight / ssnr  # SSNR 0: inf, the sample is suppressed
    else:
        c = float(wiener_constant)
        if not (c >= 0 and math.isfinite(c)):
            raise InputError(f"wiener_constant must be a finite number >= 0, got {wiener_constant}")
        per_shell = mean_weight * c
    per_shell = torch.cat([per_shell, torch.full((1,), math.inf, dtype=per_shell.dtype, device=per_shell.device)])
    return per_shell.to(weight.dtype)


def _divide(data: torch.Tensor, weight: torch.Tensor, regulariser: torch.Tensor) -> torch.Tensor:
    """``data / (weight + regulariser)``, 0 where the denominator is 0 or infinite."""
    denominator = weight + regulariser
    denominator.masked_fill_(denominator <= 0, math.inf)
    return data / denominator


def regularised_division(partial: PartialReconstruction, *, wiener_constant: float | None = DEFAULT_WIENER_CONSTANT,
                         ssnr=None) -> torch.Tensor:
    """``data / (weight + τ⁻²)`` on the padded grid (module docstring, step 2), after step 1.

    Parameters
    ----------
    partial
        Back-projected grids (:func:`backproject_chunk`).
    wiener_constant
        ``c = 1 / SSNR``, constant over shells: ``τ⁻² = c · W̄(s)``. Used when ``ssnr`` is None.
        ``0`` gives the plain ratio (samples with no weight become 0).
    ssnr
        Optional ``(n_shells,)`` spectral SNR per shell ``round(|k| N)`` (:func:`ssnr_from_fsc`);
        shells beyond its length take its last value.

    Returns
    -------
    complex64 ``(P, P, P//2 + 1)`` estimate of the (padded) map's transform in the table layout
    of :func:`cryolab.projection.prepare_volume_for_projection`, zero beyond the band limit.
    """
    ones = torch.ones(partial.pad_size, dtype=partial.data.dtype, device=partial.data.device)
    return _regularised_division(partial, wiener_constant, ssnr, ones)


def _regularised_division(partial: PartialReconstruction, wiener_constant, ssnr, factor: torch.Tensor) -> torch.Tensor:
    """:func:`regularised_division` times ``factor[kz] · factor[ky]`` (a modulation for
    :func:`_modulated_table_to_map`, applied in the same pass)."""
    data, weight = partial.folded()
    plane_d, plane_w = _symmetrised_kx0_planes(data, weight)
    shells, _ = _padded_shells(partial.pad_size, partial.box_size, weight.device)
    # W̄ of the symmetrised grid (whose kx = 0 plane holds each Friedel pair's weight twice)
    per_shell = _regulariser_per_shell(weight, shells, partial.box_size, wiener_constant=wiener_constant, ssnr=ssnr,
                                       plane0=plane_w)
    estimate = _divide_by_shell(data, weight, shells, per_shell, factor)
    estimate[..., 0] = _divide(plane_d, plane_w, per_shell[shells[..., 0]]) * (factor[:, None] * factor[None, :])
    return estimate


# --------------------------------------------------------------------------------------------
# RELION's default: iterative density-compensation weights
# --------------------------------------------------------------------------------------------


def _kaiser_bessel_transform(frequency: np.ndarray, radius: float, alpha: float) -> np.ndarray:
    """Fourier transform of the 3D Kaiser–Bessel blob of order 0, normalised to 1 at 0.

    ``B̂(ω) ∝ I_{3/2}(σ) / σ^{3/2}`` with ``σ = sqrt(α² - (2π a ω)²)`` (``J_{3/2}`` and
    ``sqrt((2π a ω)² - α²)`` beyond ``2π a ω = α``) — Lewitt (1990), RELION's
    ``kaiser_Fourier_value`` for m = 0.
    """
    from scipy.special import iv, jv

    z = 2 * math.pi * radius * np.asarray(frequency, dtype=np.float64)
    inside = z <= alpha
    sigma = np.sqrt(np.abs(alpha**2 - z**2)).clip(min=1e-8)
    value = np.where(inside, iv(1.5, sigma) / sigma**1.5, jv(1.5, sigma) / sigma**1.5)
    return value / (iv(1.5, alpha) / alpha**1.5)


def relion_gridding_weights(weight, box_size: int, *, iterations: int = 10, blob_radius: float = 3.8,
                            blob_alpha: float = 15.0) -> torch.Tensor:
    """Density-compensation multipliers of RELION's ``BackProjector::reconstruct`` (no MAP term).

    Starting from ``w = 1`` inside the band, each iteration sets ``w ← w / max(1e-6, |(w · weight)
    ⊛ B|)``, the convolution with the blob ``B`` done by multiplying the inverse transform with
    the blob's transform (Pipe & Menon 1999, eq. 14). Returns ``w`` (float32, table layout);
    ``data · w`` is the gridded estimate.

    Parameters
    ----------
    weight
        ``(P, P, P//2 + 1)`` weight grid in the centred table layout (Friedel-symmetric plane).
    box_size
        ``N``.
    iterations, blob_radius, blob_alpha
        RELION's ``--iter`` (10), blob radius in padded voxels (RELION 3.1 tabulates ``2 · --blob_r``
        = 3.8, whatever the padding) and ``--blob_a`` (15); blob order 0.
    """
    weight = as_tensor(weight, dtype=torch.float32)
    pad = weight.shape[-2]
    _, inside = _padded_shells(pad, box_size, weight.device)
    # blob transform on the real-space grid of the padded box, radius in units of P voxels
    axis = torch.fft.fftfreq(pad, d=1.0 / pad, dtype=torch.float64)  # 0, 1, ..., -1 (voxels)
    table_r = np.linspace(0.0, math.sqrt(3) / 2, 20001)
    table = torch.as_tensor(_kaiser_bessel_transform(table_r, blob_radius, blob_alpha), dtype=torch.float32)
    r = torch.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2) / pad
    blob = table[torch.round(r / table_r[-1] * (len(table_r) - 1)).to(torch.int64)]
    del r
    dims = (-3, -2, -1)
    w = inside.to(torch.float32)
    unshifted_weight = torch.fft.ifftshift(weight, dim=(-3, -2))
    w = torch.fft.ifftshift(w, dim=(-3, -2))
    unshifted_inside = torch.fft.ifftshift(inside, dim=(-3, -2))
    for _ in range(int(iterations)):
        spread = torch.fft.irfftn((w * unshifted_weight).to(torch.complex64), s=(pad, pad, pad), dim=dims)
        convolved = torch.fft.rfftn(spread * blob, dim=dims).abs()
        w = torch.where(unshifted_inside, w / convolved.clamp_min(1e-6), w)
    return torch.fft.fftshift(w, dim=(-3, -2))


# --------------------------------------------------------------------------------------------
# Back to real space
# --------------------------------------------------------------------------------------------


def table_to_map(table, box_size: int, *, interpolation: str = "linear") -> torch.Tensor:
    """Real-space map from a padded centred rfft table: inverse FFT, crop, gridding correction.

    Parameters
    ----------
    table
        complex ``(P, P, P//2 + 1)`` in the layout of
        :func:`cryolab.projection.prepare_volume_for_projection`.
    box_size
        ``N``, the size of the map.
    interpolation
        Kernel the table was gridded with (``"linear"`` or ``"nearest"``): fixes the gridding
        correction.

    Returns
    -------
    float32 ``(N, N, N)`` map centred at ``N//2``.
    """
    table = as_tensor(table)
    factor = _crop_modulation(table.shape[-2], box_size, table.device).to(table.dtype)
    return _modulated_table_to_map(table * (factor[:, None, None] * factor[None, :, None]), box_size,
                                   interpolation=interpolation)


@lru_cache(maxsize=4)
def _crop_modulation(pad: int, box_size: int, device) -> torch.Tensor:
    """complex128 ``(P,)`` factors ``exp(-2πi j (N//2) / P)`` of table index ``j`` along ``kz`` and ``ky``.

    Multiplying the table by them rotates the inverse transform along those axes by ``N//2``
    samples, so that the ``N`` voxels the crop keeps (offsets ``-N//2 … N - N//2 - 1`` from the
    origin) become the first ``N`` outputs (:func:`_modulated_table_to_map`). For ``P = 2N`` with
    ``N`` divisible by 4 they are powers of ``-i``.
    """
    j = torch.arange(pad, dtype=torch.float64, device=device)
    phase = -2 * math.pi * ((j * (box_size // 2)) % pad) / pad
    cos, sin = torch.cos(phase), torch.sin(phase)
    cos, sin = (torch.where(x.abs() < 1e-12, 0.0, x) for x in (cos, sin))  # exact 0 at odd multiples of π/2
    return torch.complex(cos, sin)


def _modulated_table_to_map(table: torch.Tensor, box_size: int, *, interpolation: str) -> torch.Tensor:
    """:func:`table_to_map` of a contiguous table already multiplied by :func:`_crop_modulation`
    along ``kz`` and ``ky``; the table is overwritten (used as work space).

    Equal to ``crop(irfft_centered(rfft_ifftshift(table), (P, P, P)), N)``, computed cheaper:

    - the inverse transform of the table as it stands (kz, ky centred: shifted by P/2) is the
      padded map times (-1)^(z + y) with its origin at index 0, so no array is shifted; thanks
      to the modulation the central N voxels along z and y are the first N outputs (views, no
      copies; on the CPU the transforms along z and y run in place); along x they are those at
      offsets -N//2 … N - N//2 - 1 from index 0 (wrapping);
    - the 1D inverse transforms run one axis at a time, keeping only those N of the P outputs
      before the next axis (about 0.6 of the work of the full 3D transform).
    """
    table = table.contiguous()
    pad = table.shape[-2]
    offsets = torch.arange(box_size, device=table.device) - box_size // 2
    if table.device.type == "cpu" and not table.requires_grad and _NUMPY_FFT_IN_PLACE:
        # numpy's pocketfft (numpy >= 2: single precision, out=) transforms in place; torch.fft
        # allocates every result, and a fresh 10⁸-byte buffer costs about as much in page faults
        # as the transform itself
        array = table.numpy()
        array = np.fft.ifft(array, axis=-3, out=array)[:box_size]
        array = np.fft.ifft(array, axis=-2, out=array)[:, :box_size]
        volume = torch.from_numpy(np.fft.irfft(array, n=pad, axis=-1))
    else:
        volume = torch.fft.ifft(table, dim=-3).narrow(-3, 0, box_size)
        volume = torch.fft.ifft(volume, dim=-2).narrow(-2, 0, box_size)
        volume = torch.fft.irfft(volume, n=pad, dim=-1)
    volume = volume.index_select(-1, offsets % pad)
    sign = 1.0 - 2.0 * (offsets % 2).to(volume.dtype)  # (-1)^offset (P is even)
    volume = volume * (sign[:, None, None] * sign[None, :, None])
    correction = gridding_correction((box_size,) * 3, pad, interpolation=interpolation).to(volume.device)
    return (volume / correction).to(torch.float32)


def mask_outside_sphere(volume, *, cosine_width: float = 3.0) -> torch.Tensor:
    """Replace the map outside the sphere of radius ``N/2`` by its mean there (RELION's ``softMaskOutsideMap``).

    Inside radius ``N/2`` (voxels, from the centre ``N//2``) the map is unchanged; over the next
    ``cosine_width`` voxels it blends with a raised cosine into the weighted mean of the map
    outside the sphere, which fills the corners.

    Parameters
    ----------
    volume
        Real ``(..., N, N, N)`` maps.
    cosine_width
        Width of the soft edge in voxels (RELION: 3).
    """
    volume = as_tensor(volume)
    outside = _outside_sphere(volume.shape[-1], float(cosine_width), volume.device, volume.dtype)
    background = (volume * outside).sum(dim=(-3, -2, -1), keepdim=True) / outside.sum().clamp_min(1e-12)
    return volume + outside * (background - volume)


@lru_cache(maxsize=4)
def _outside_sphere(n: int, cosine_width: float, device, dtype) -> torch.Tensor:
    """``1 -`` the soft spherical mask of :func:`mask_outside_sphere` (cached: every map of a run
    uses the same; read-only)."""
    from cryolab.masks import spherical_mask

    return 1 - spherical_mask(n, 1.0, n / 2, soft_edge_A=cosine_width, device=device).to(dtype)


def finalize(
    partial: PartialReconstruction,
    *,
    method: str = "wiener",
    wiener_constant: float | None = DEFAULT_WIENER_CONSTANT,
    ssnr=None,
    relion_iterations: int = 10,
    mask_corners: bool = True,
) -> torch.Tensor:
    """The map from back-projected grids: regularised division, gridding correction, masked corners.

    Parameters
    ----------
    partial
        Sum of :func:`backproject_chunk` results.
    method
        ``"wiener"`` (default): ``data / (weight + τ⁻²)``, with ``τ⁻²`` from ``ssnr`` or
        ``wiener_constant`` (module docstring). ``"relion"``: RELION ``relion_reconstruct``'s
        default, iterative density-compensation weights (:func:`relion_gridding_weights`); a
        given ``ssnr`` is added to the weight first (RELION's MAP term).
    wiener_constant
        ``1 / SSNR`` for ``"wiener"`` without ``ssnr`` (default ``1e-3``).
    ssnr
        Optional ``(n_shells,)`` per-shell SSNR (:func:`ssnr_from_fsc`).
    relion_iterations
        Iterations for ``"relion"`` (RELION's ``--iter``, 10).
    mask_corners
        Fill the corners outside the sphere of radius ``N/2`` with their mean
        (:func:`mask_outside_sphere`, as RELION); False leaves them.

    Returns
    -------
    float32 ``(N, N, N)`` map centred at ``N//2``, in the units of the map the images are
    projections of: a map projected with ``cryolab.projection.project_fourier`` and
    reconstructed comes back within its band limit, up to a smooth offset (the padded grid's
    samples next to the origin lie between the slices' samples and are poorly determined).
    """
    if method not in FINALIZE_METHODS:
        raise InputError(f"method must be one of {FINALIZE_METHODS}, got {method!r}")
    with _single_threaded():
        volume = _finalize(partial, method, wiener_constant, ssnr, relion_iterations)
        return mask_outside_sphere(volume) if mask_corners else volume


def _finalize(partial, method, wiener_constant, ssnr, relion_iterations) -> torch.Tensor:
    if method == "wiener":
        factor = _crop_modulation(partial.pad_size, partial.box_size, partial.data.device).to(partial.data.dtype)
        table = _regularised_division(partial, wiener_constant, ssnr, factor)
        return _modulated_table_to_map(table, partial.box_size, interpolation=partial.interpolation)
    data, weight = _symmetrise_kx0(*partial.folded())
    if ssnr is not None:
        shells, _ = _padded_shells(partial.pad_size, partial.box_size, weight.device)
        per_shell = _regulariser_per_shell(weight, shells, partial.box_size, wiener_constant=None, ssnr=ssnr)
        weight = weight + torch.nan_to_num(per_shell[shells], posinf=0.0)
    table = data * relion_gridding_weights(weight, partial.box_size, iterations=relion_iterations)
    return table_to_map(table, partial.box_size, interpolation=partial.interpolation)
