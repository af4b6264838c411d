"""In-plane rotated Fourier samples of 2D class averages (RELION's 2D projector), and the exact adjoint.

The operator ``L`` maps a real ``N × N`` average ``a`` to the values ``A(Rᵀ k)`` of its transform at
the rotated image-frame frequencies ``k`` of every angle (``image(x) = a(Rᵀ x)`` has transform
``A(Rᵀ k)``, docs/conventions.md). As in RELION it is computed once per average on a ``pad``-times
finer grid and then read by bilinear interpolation:

1. divide ``a`` by the gridding correction ``sinc²(x/P) sinc²(y/P)`` (``P = pad·N``), the real-space
   envelope that the bilinear Fourier interpolation multiplies back in
   (:func:`cryolab.projection.gridding_correction`);
2. zero-pad to ``P × P`` about the centre and take the full-plane transform with the origin at
   the centre (unshifted layout; the sampler maps centred coordinates into it);
3. read it at ``P // 2 + pad · Rᵀ k`` by bilinear interpolation (the taps of
   :func:`cryolab.interpolate.sample_grid_2d`, held as a sparse matrix built once per iteration,
   :func:`rotated_sampler`, since every average is read at the same points).

``Lᵀ`` (:func:`project_references_adjoint`) is the exact adjoint for the real inner products
``<a, b> = Σ a b`` and ``<u, v> = Re Σ conj(u) v``: the transposed sparse matrix (insertion with
the same weights, :func:`cryolab.interpolate.insert_into_grid_2d`), the adjoint transform
``P² · ifft``, cropping and the same division. The E-step uses ``L``; the M-step solves normal equations built from ``L``
and ``Lᵀ``, so both steps share one model of rotation.

References
----------
S. H. W. Scheres, J. Struct. Biol. 180, 519–530 (2012): ``Projector::get2DFourierTransform``
and ``BackProjector::set2DFourierTransform`` (padding factor 2, linear interpolation).
J. A. Fessler & B. P. Sutton, "Nonuniform fast Fourier transforms using min-max interpolation",
IEEE Trans. Signal Process. 51, 560–574 (2003) (gridding correction of interpolation in Fourier
space).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.projection import gridding_correction
from cryolab.rotations import inplane_rotation_matrix

__all__ = ["reference_spectra", "reference_spectra_adjoint", "rotated_sample_coordinates", "RotatedSampler",
           "rotated_sampler", "project_references", "project_references_adjoint"]

_DIMS = (-2, -1)


def _envelope(box_size: int, pad: int, like: torch.Tensor) -> torch.Tensor:
    return gridding_correction((box_size, box_size), pad * box_size).to(device=like.device, dtype=like.dtype)


def _origin_first(images: torch.Tensor, p: int) -> torch.Tensor:
    """``ifftshift(pad_center(images, P))``: the ``N × N`` images in a zero ``P × P`` grid, centre at index 0."""
    n = images.shape[-1]
    c = n // 2
    out = images.new_zeros(*images.shape[:-2], p, p)
    out[..., :n - c, :n - c] = images[..., c:, c:]
    out[..., :n - c, p - c:] = images[..., c:, :c]
    out[..., p - c:, :n - c] = images[..., :c, c:]
    out[..., p - c:, p - c:] = images[..., :c, :c]
    return out


def _centre_from_origin_first(grid: torch.Tensor, n: int) -> torch.Tensor:
    """Adjoint of :func:`_origin_first`: the ``N × N`` window about index 0, centred at ``N // 2``."""
    p = grid.shape[-1]
    c = n // 2
    out = grid.new_empty(*grid.shape[:-2], n, n)
    out[..., c:, c:] = grid[..., :n - c, :n - c]
    out[..., c:, :c] = grid[..., :n - c, p - c:]
    out[..., :c, c:] = grid[..., p - c:, :n - c]
    out[..., :c, :c] = grid[..., p - c:, p - c:]
    return out


def reference_spectra(images, *, pad: int = 2) -> torch.Tensor:
    """Full-plane transforms of gridding-corrected, zero-padded averages (unshifted layout).

    Parameters
    ----------
    images
        Real ``(..., N, N)`` averages centred at ``N // 2``.
    pad
        Oversampling ``P / N`` (2 as RELION).

    Returns
    -------
    complex ``(..., P, P)``, ``fft2`` layout: the value for frequency ``k`` (cycles per ``N``
    pixels) sits at ``(pad · ky mod P, pad · kx mod P)``; the origin is the average's centre.
    """
    images = as_tensor(images)
    n = images.shape[-1]
    if images.dim() < 2 or images.shape[-2] != n:
        raise InputError(f"averages must be square (..., N, N), got {tuple(images.shape)}")
    p = int(pad) * n
    return torch.fft.fft2(_origin_first(images / _envelope(n, int(pad), images), p))


def reference_spectra_adjoint(spectra, box_size: int) -> torch.Tensor:
    """Adjoint of :func:`reference_spectra` (real ``(..., N, N)`` from complex ``(..., P, P)``)."""
    spectra = as_tensor(spectra)
    p = spectra.shape[-1]
    pad = p // int(box_size)
    full = torch.fft.ifft2(spectra).real * (p * p)
    return _centre_from_origin_first(full, int(box_size)) / _envelope(int(box_size), pad, full)


def rotated_sample_coordinates(frequencies_xy, psi_deg, box_size: int, *, pad: int = 2) -> torch.Tensor:
    """Grid coordinates ``P // 2 + pad · Rᵀ k`` of frequencies ``k`` at every angle, ``(R, M, 2)``.

    ``frequencies_xy`` are ``(M, 2)`` integer ``(kx, ky)`` in cycles per box; ``R`` is
    :func:`cryolab.rotations.inplane_rotation_matrix` of each angle (``psi_deg``, ``(R,)``).
    """
    k = as_tensor(frequencies_xy, dtype=torch.float64)
    rot = inplane_rotation_matrix(as_tensor(psi_deg, dtype=torch.float64, device=k.device).reshape(-1))
    ref_freq = torch.einsum("rji,mj->rmi", rot, k)  # Rᵀ k
    return (ref_freq * pad + pad * int(box_size) // 2).to(torch.float32)


@dataclass(frozen=True)
class RotatedSampler:
    """``L`` as a sparse matrix: bilinear interpolation of ``P × P`` grids at fixed ``(R, M)`` points.

    The taps and weights are those of :func:`cryolab.interpolate.sample_grid_2d` with
    ``method="linear"`` on the centred grid (taps outside it read 0), mapped to the unshifted
    layout of :func:`reference_spectra`, computed once and applied to any number of grids by sparse
    matrix products (tests check the equality).

    Attributes
    ----------
    matrix, matrix_t
        ``(R·M, P²)`` and its transpose, sparse CSR, float32.
    shape
        ``(R, M)``.
    box_size, pad
        ``N`` and ``P / N``.
    """

    matrix: torch.Tensor
    matrix_t: torch.Tensor
    shape: tuple
    box_size: int
    pad: int


def rotated_sampler(frequencies_xy, psi_deg, box_size: int, *, pad: int = 2, device=None) -> RotatedSampler:
    """The sparse operator reading ``A(Rᵀ k)`` for frequencies ``(M, 2)`` at angles ``(R,)``."""
    coords = rotated_sample_coordinates(frequencies_xy, psi_deg, box_size, pad=pad).double()
    if device is not None:
        coords = coords.to(device)
    r, m = coords.shape[:2]
    p = pad * int(box_size)
    base = torch.floor(coords)
    frac = coords - base
    i0 = base.long()
    rows, cols, vals = [], [], []
    point = torch.arange(r * m, device=coords.device).reshape(r, m)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = i0[..., 0] + dx, i0[..., 1] + dy
            w = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
            inside = (x >= 0) & (x < p) & (y >= 0) & (y < p) & (w != 0)
            rows.append(point[inside])
            # centred grid coordinates -> the unshifted fft2 layout of reference_spectra
            cols.append((((y - p // 2) % p) * p + (x - p // 2) % p)[inside])
            vals.append(w[inside])
    index = torch.stack([torch.cat(rows), torch.cat(cols)])
    matrix = torch.sparse_coo_tensor(index, torch.cat(vals).float(), (r * m, p * p), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used only for products here
        warnings.simplefilter("ignore", UserWarning)
        csr, csr_t = matrix.to_sparse_csr(), matrix.t().coalesce().to_sparse_csr()
    return RotatedSampler(matrix=csr, matrix_t=csr_t, shape=(r, m), box_size=int(box_size), pad=int(pad))


def _apply(matrix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``matrix @ v`` for complex ``(..., columns)`` values, real and imaginary parts side by side."""
    batch = values.shape[:-1]
    flat = torch.view_as_real(values.reshape(-1, values.shape[-1]).to(torch.complex64))  # (B, C, 2)
    dense = flat.permute(1, 0, 2).reshape(values.shape[-1], -1)  # (C, 2B)
    out = (matrix @ dense).reshape(matrix.shape[0], -1, 2).permute(1, 0, 2).contiguous()
    return torch.view_as_complex(out).reshape(*batch, matrix.shape[0])


def project_references(images, sampler: RotatedSampler) -> torch.Tensor:
    """``L a``: transform values of rotated averages at the image-frame frequencies.

    Parameters
    ----------
    images
        Real ``(..., N, N)`` averages.
    sampler
        :func:`rotated_sampler` of the frequencies and angles.

    Returns
    -------
    complex64 ``(..., R, M)``: ``A(Rᵀ k)`` for every angle and frequency.
    """
    spectra = reference_spectra(images, pad=sampler.pad)
    values = _apply(sampler.matrix, spectra.reshape(*spectra.shape[:-2], -1))
    return values.reshape(*values.shape[:-1], *sampler.shape)


def project_references_adjoint(values, sampler: RotatedSampler) -> torch.Tensor:
    """``Lᵀ v``: real ``(..., N, N)`` from complex ``(..., R, M)`` values at the rotated frequencies."""
    values = as_tensor(values)
    p = sampler.pad * sampler.box_size
    grid = _apply(sampler.matrix_t, values.reshape(*values.shape[:-2], -1))
    return reference_spectra_adjoint(grid.reshape(*grid.shape[:-1], p, p), sampler.box_size)
