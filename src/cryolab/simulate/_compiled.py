"""Element-wise passes of the simulation, compiled: phase ramp × CTF on spectra, stack statistics.

Both are single passes over a chunk of images that torch would take in three to five (a ramp
outer product, two complex products; or a float64 copy, a product and four reductions), each
with its temporaries: in cryolab simulate they cost about as much as the inverse FFT. The kernels
are numba functions compiled on first use and cached on disk (``__pycache__``), like the
projector's (:mod:`cryolab.projection`). Where numba is missing, or with the environment variable
``CRYOLAB_NUMBA=0``, the torch versions below compute the same numbers (to rounding: the
kernels multiply in the same order but may fuse a multiply-add).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch


def compiled_enabled() -> bool:
    """True when the numba kernels are used (numba installed and ``CRYOLAB_NUMBA`` is not 0)."""
    return os.environ.get("CRYOLAB_NUMBA", "1") != "0" and _kernels() is not None


@functools.lru_cache(maxsize=1)
def _kernels():
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    return (numba.njit(cache=True, nogil=True)(_nb_modulate),
            numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nnan", "nsz"})(_nb_stack_statistics))


def _nb_modulate(spectra, ramp_y, ramp_x, ctf, ctf_ids):
    """spectra[j, r, c] *= (ramp_y[j, r] · ramp_x[j, c]) · ctf[ctf_ids[j], r, c], in place.

    Complex arrays (numba vectorises complex products, not their float-pair spelling); an empty
    ramp or CTF array (first dimension 0) is left out."""
    n, h, w = spectra.shape
    has_ramp = ramp_y.shape[0] > 0
    has_ctf = ctf.shape[0] > 0
    for j in range(n):
        c_id = ctf_ids[j] if has_ctf else 0
        for r in range(h):
            row = spectra[j, r]
            if has_ramp and has_ctf:
                y = ramp_y[j, r]
                x = ramp_x[j]
                values = ctf[c_id, r]
                for c in range(w):
                    v = row[c] * (y * x[c])  # the ramp of apply_shifts_rfft: ramp_y · ramp_x, then the product
                    row[c] = complex(v.real * values[c], v.imag * values[c])
            elif has_ramp:
                y = ramp_y[j, r]
                x = ramp_x[j]
                for c in range(w):
                    row[c] = row[c] * (y * x[c])
            elif has_ctf:
                values = ctf[c_id, r]
                for c in range(w):
                    v = row[c]
                    row[c] = complex(v.real * values[c], v.imag * values[c])


def _nb_stack_statistics(images, sums, sums_of_squares):
    """Per image (rows of ``images``) the float64 sum and sum of squares; returns (min, max).

    Separate loops for the sums and the extremes vectorise (the reassociated sums are still a
    fixed function of the row)."""
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    for j in range(images.shape[0]):
        row = images[j]
        s = 0.0
        s2 = 0.0
        for i in range(row.shape[0]):
            v = np.float64(row[i])
            s += v
            s2 += v * v
        row_lo = row[0]
        row_hi = row[0]
        for i in range(row.shape[0]):
            x = row[i]
            row_lo = x if x < row_lo else row_lo
            row_hi = x if x > row_hi else row_hi
        sums[j] = s
        sums_of_squares[j] = s2
        lo = min(lo, row_lo)
        hi = max(hi, row_hi)
    return lo, hi


def modulate_rfft(spectra: torch.Tensor, *, ramp=None, ctf: torch.Tensor | None = None) -> torch.Tensor:
    """Multiply rfft spectra ``(n, h, w')`` in place by a separable phase ramp and a real CTF.

    Parameters
    ----------
    spectra
        Contiguous complex ``(n, h, w')`` CPU tensor, modified in place and returned.
    ramp
        None, or ``(ramp_y, ramp_x)`` of shapes ``(n, h)`` and ``(n, w')`` (the factors of
        :func:`cryolab.projection.apply_shifts_rfft`'s ramp): the spectra are multiplied by
        ``ramp_y[:, :, None] · ramp_x[:, None, :]``.
    ctf
        None, or real values ``(n, h, w')`` or ``(1, h, w')`` (one CTF for all).
    """
    if ramp is None and ctf is None:
        return spectra
    if not compiled_enabled() or spectra.requires_grad or spectra.device.type != "cpu" or spectra.is_conj():
        if ramp is not None:
            spectra.mul_(ramp[0][:, :, None] * ramp[1][:, None, :])
        if ctf is not None:
            spectra.mul_(ctf)
        return spectra
    real = spectra.real.dtype
    n = spectra.shape[0]
    if ramp is not None:
        ramp_y, ramp_x = ramp[0].to(spectra.dtype).contiguous(), ramp[1].to(spectra.dtype).contiguous()
    else:
        ramp_y = ramp_x = torch.zeros(0, 1, dtype=spectra.dtype)
    if ctf is not None:
        ctf = ctf.to(real).contiguous()
        ctf_ids = torch.zeros(n, dtype=torch.int64) if ctf.shape[0] == 1 else torch.arange(n)
    else:
        ctf, ctf_ids = torch.zeros(0, 1, 1, dtype=real), torch.zeros(1, dtype=torch.int64)
    _kernels()[0](spectra.numpy(), ramp_y.resolve_conj().numpy(), ramp_x.resolve_conj().numpy(),
                  ctf.numpy(), ctf_ids.numpy())
    return spectra


def stack_statistics(images: torch.Tensor) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``(min, max, sums, sums_of_squares)`` of ``(n, …)`` float32 images: per-image float64 sums.

    Per image, so that totals over a stack (``math.fsum``) do not depend on how it was chunked.
    """
    flat = images.detach().reshape(images.shape[0], -1)
    if compiled_enabled() and flat.device.type == "cpu" and flat.dtype == torch.float32:
        data = flat.contiguous().numpy()
        sums = np.empty(flat.shape[0])
        sums_of_squares = np.empty(flat.shape[0])
        lo, hi = _kernels()[1](data, sums, sums_of_squares)
        return float(lo), float(hi), sums, sums_of_squares
    data = flat.cpu().double()
    return (float(flat.min()), float(flat.max()), data.sum(dim=1).numpy(),
            torch.einsum("ij,ij->i", data, data).numpy())
