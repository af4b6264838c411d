"""CTF parameters for simulated particles, and the CTF applied on a padded canvas.

Parameters are drawn from ranges (:func:`sample_ctf_params`) or resampled with replacement from
the particle table of a real data set (:func:`resample_ctf_params`, :func:`read_ctf_table`), and
travel as one :class:`cryolab.ctf.CTFParams` with batch shape ``(n,)``. Conventions:
docs/conventions.md, "CTF" (RELION/CTFFIND: defocus U ≥ V in Å, positive = underfocus, angle
in degrees from the x axis).

Why a padded canvas
-------------------
A CTF at high defocus is a wide point-spread function: it delocalises the particle's signal by
about ``λ Δf k_max`` (e.g. 2 µm defocus at 300 kV and 4 Å: ~100 Å). Multiplying the ``N × N``
image's transform by the ``N × N`` CTF is a *circular* convolution, so the delocalised signal
wraps around and re-enters on the opposite edge. :func:`apply_ctf_padded` instead zero-pads the
projection to ``M = pad_factor · N`` (real space, about the centre ``N // 2``), multiplies by
the CTF sampled on the ``M × M`` grid and crops the centre ``N × N`` back, as the image of a
particle in a large micrograph is formed; the signal that leaves the box is lost instead of
wrapped. With ``pad_factor = 1`` it is RELION's (and ``project_fourier``'s) unpadded CTF.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from cryolab._tensor import as_tensor, broadcast_shapes
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.errors import InputError
from cryolab.fourier import phase_ramp_rfft
from cryolab.simulate._buffers import scratch
from cryolab.simulate._compiled import modulate_rfft

#: Columns a particle table must have to supply CTF parameters.
CTF_REQUIRED_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")


def sample_ctf_params(n: int, *, defocus_min_A: float = 10000.0, defocus_max_A: float = 25000.0,
                      astigmatism_max_A: float = 0.0, voltage_kV: float = 300.0, cs_mm: float = 2.7,
                      amplitude_contrast: float = 0.1, bfactor_A2: float = 0.0,
                      generator: torch.Generator | None = None) -> CTFParams:
    """CTF parameters of ``n`` particles drawn from ranges.

    The mean defocus ``(U + V) / 2`` is uniform in ``[defocus_min_A, defocus_max_A]``, the
    astigmatism ``U − V`` uniform in ``[0, astigmatism_max_A]`` and the astigmatism angle uniform
    in ``[0, 180)`` degrees; the optics (voltage, Cs, Q0, B-factor) are the same for all.

    Returns
    -------
    CTFParams with batch shape ``(n,)``.
    """
    if int(n) != n or n <= 0:
        raise InputError(f"number of particles must be a positive integer, got {n}")
    if not 0 <= defocus_min_A <= defocus_max_A:
        raise InputError(f"need 0 <= defocus min <= defocus max (Å), got {defocus_min_A}, {defocus_max_A}")
    if astigmatism_max_A < 0:
        raise InputError(f"astigmatism must be >= 0 Å, got {astigmatism_max_A}")
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    mean = defocus_min_A + (defocus_max_A - defocus_min_A) * u[:, 0]
    astig = astigmatism_max_A * u[:, 1]
    angle = 180.0 * u[:, 2]
    return CTFParams(
        defocus_u_A=(mean + astig / 2).float(), defocus_v_A=(mean - astig / 2).float(),
        defocus_angle_deg=angle.float(), voltage_kV=torch.full((n,), float(voltage_kV)),
        cs_mm=torch.full((n,), float(cs_mm)), amplitude_contrast=torch.full((n,), float(amplitude_contrast)),
        bfactor_A2=torch.full((n,), float(bfactor_A2)),
    )


def read_ctf_table(path) -> pd.DataFrame:
    """The particle table of a RELION STAR or cryoSPARC ``.cs`` file, checked for CTF columns.

    The pixel size of the file is not needed for CTF parameters (defocus is in Å); a file without
    one is read all the same.
    """
    from cryolab.io import read_cryosparc, read_star

    path = Path(os.fspath(path))
    reader = read_cryosparc if path.suffix.lower() == ".cs" else read_star
    try:
        table = reader(path)
    except InputError as exc:
        if not exc.problem.startswith("no pixel size"):
            raise
        table = reader(path, pixel_size_A=1.0)
    missing = [c for c in CTF_REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"no CTF parameters: missing column(s) {', '.join(missing)}", path)
    if len(table) == 0:
        raise InputError("the particle table is empty", path)
    return table


def resample_ctf_params(table: pd.DataFrame, n: int, *, generator: torch.Generator | None = None) -> CTFParams:
    """CTF parameters of ``n`` particles copied from rows of ``table`` drawn with replacement.

    ``table`` has RELION column names (``cryolab.io`` tables); missing optional columns take
    :meth:`CTFParams.from_table`'s defaults.
    """
    if int(n) != n or n <= 0:
        raise InputError(f"number of particles must be a positive integer, got {n}")
    source = table.attrs.get("cryolab_source") if hasattr(table, "attrs") else None
    if len(table) == 0:
        raise InputError("the particle table is empty", source)
    rows = torch.randint(len(table), (n,), generator=generator).numpy()
    try:
        return CTFParams.from_table(table.iloc[rows].reset_index(drop=True))
    except InputError as exc:
        raise InputError(exc.problem, source) from None


def with_defocus_offset(params: CTFParams, offset_A) -> CTFParams:
    """``params`` with ``offset_A`` (Å, broadcasting) added to defocus U and V."""
    import dataclasses

    offset = as_tensor(offset_A, dtype=params.defocus_u_A.dtype)
    return dataclasses.replace(params, defocus_u_A=params.defocus_u_A + offset,
                               defocus_v_A=params.defocus_v_A + offset)


def apply_ctf_padded(images, ctf: CTFParams | None, pixel_size_A: float, *, pad_factor: float = 2,
                     shifts_A=None, out: torch.Tensor | None = None, workspace=None) -> torch.Tensor:
    """Shift and CTF-modulate centred images on a zero-padded canvas, then crop back.

    Parameters
    ----------
    images
        ``(..., N, N)`` real projections, centred at ``N // 2`` (no shift, no CTF yet).
    ctf
        CTF parameters whose batch shape broadcasts with ``images.shape[:-2]``, or None.
    pixel_size_A
        Pixel size in Å.
    pad_factor
        Canvas size ``M = round(pad_factor · N)`` (≥ N); 1 means no padding.
    shifts_A
        Optional ``(..., 2)`` origins ``(x, y)`` in Å (``image(x) = P(x + origin)``), applied on
        the canvas as well.
    out
        Optional float32 tensor of the result's shape to write the result into.
    workspace
        Optional object (e.g. a ``threading.local``) on which the canvas arrays are kept from one
        call to the next: chunk after chunk, fresh ones would cost a page fault per 4 KiB.

    Returns
    -------
    ``(..., N, N)`` float32: ``crop_N(F⁻¹[CTF_M · ramp · F(pad_M(images))])``.
    """
    images = as_tensor(images, dtype=torch.float32)
    n = images.shape[-1]
    if images.dim() < 2 or images.shape[-2] != n:
        raise InputError(f"images must be square (..., N, N), got {tuple(images.shape)}")
    if not pad_factor >= 1:
        raise InputError(f"CTF pad factor must be >= 1, got {pad_factor}")
    if ctf is None and shifts_A is None:
        return images if out is None else out.copy_(images)
    m = max(n, int(round(pad_factor * n)))
    half = m // 2 + 1
    batch = images.shape[:-2]
    if shifts_A is not None:
        shifts_A = as_tensor(shifts_A, dtype=torch.float32)
        batch = broadcast_shapes(batch, shifts_A.shape[:-1])
    if ctf is not None:
        batch = broadcast_shapes(batch, ctf.batch_shape)
    count = batch.numel()
    # crop_N ∘ irfft_centered ∘ (ramp · CTF) ∘ rfft_centered ∘ pad_M: the centring shifts and the
    # placement of the image in the canvas are translations, which commute with the Fourier-space
    # filter, so the image can sit in the canvas' corner and the result is the corner's N × N
    # (torch.fft zero-pads at the end): the same numbers without the pad, shift and crop copies.
    if images.shape[:-2] == batch:
        spectrum = torch.fft.rfft2(images.reshape(count, n, n), s=(m, m),
                                   out=scratch(workspace, "spectrum", (count, m, half), torch.complex64))
    else:
        spectrum = torch.fft.rfft2(images, s=(m, m)).expand(*batch, m, half).reshape(count, m, half).contiguous()
    ramp = None
    if shifts_A is not None:
        ramp_y, ramp_x = separable_phase_ramp(shifts_A / float(pixel_size_A), (m, m))
        ramp = (ramp_y.expand(*batch, m).reshape(count, m), ramp_x.expand(*batch, half).reshape(count, half))
    values = None
    if ctf is not None:
        values = ctf_2d(ctf, (m, m), pixel_size_A, rfft=True)
        values = values.reshape(1, m, half) if ctf.batch_shape.numel() == 1 else \
            values.expand(*batch, m, half).reshape(count, m, half)
    modulate_rfft(spectrum, ramp=ramp, ctf=values)  # one pass, in place
    # inverse transform of the first n rows and columns only: over rows (kept n, in place on the
    # transposed copy), then columns
    columns = scratch(workspace, "columns", (count, half, m), torch.complex64).copy_(spectrum.transpose(-1, -2))
    torch.fft.ifft(columns, dim=-1, out=columns)
    rows = scratch(workspace, "rows", (count, n, half), torch.complex64).copy_(columns[..., :n].transpose(-1, -2))
    cropped = torch.fft.irfft(rows, n=m, dim=-1, out=scratch(workspace, "cropped", (count, n, m), torch.float32))
    result = cropped[..., :n].reshape(*batch, n, n)
    return result.contiguous() if out is None else out.copy_(result)


def separable_phase_ramp(shifts_px, image_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column factors ``(..., h)`` and ``(..., w//2 + 1)`` of the rfft phase ramp
    :func:`cryolab.fourier.phase_ramp_rfft` that translates images by ``-shifts_px`` (x, y)
    pixels — the ramp of :func:`cryolab.projection.apply_shifts_rfft`, ``image(x) = P(x + origin)``,
    whose outer product is the full ramp (its Nyquist convention included), complex64."""
    shifts_px = -as_tensor(shifts_px, dtype=torch.float32)
    h, w = image_shape
    zero = torch.zeros_like(shifts_px[..., :1])
    ramp_y = phase_ramp_rfft(torch.cat([zero, shifts_px[..., 1:]], dim=-1), (h, 1))[..., 0]
    ramp_x = phase_ramp_rfft(shifts_px[..., :1], (w,))
    return ramp_y, ramp_x
