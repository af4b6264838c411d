"""Post-processing of half maps: Guinier plot, B-factor fit, FSC weighting, sharpening, low-pass.

The steps of ``relion_postprocess`` (Rosenthal & Henderson 2003), as plain functions and a
short driver :func:`postprocess`:

1. FSC of the half maps, with a mask corrected by phase randomisation
   (:func:`cryolab.validate.masked_fsc_corrected`); resolution at FSC = 0.143.
2. The average of the half maps is weighted per shell by ``sqrt(2 FSC / (1 + FSC))``, the
   expected correlation of the full map with the truth (:func:`fsc_weighting_filter`).
3. A Guinier plot (ln of the mean Fourier amplitude per shell against ``k²``, 1/Å²) of the
   weighted map is fitted by a straight line between ``lowres_A`` (10 Å) and ``highres_A``;
   the B-factor to apply is ``B = 4 × slope`` (negative: it sharpens).
4. The map is multiplied by ``exp(-B k² / 4)`` (:func:`cryolab.fourier.bfactor_filter`, the
   CTF envelope convention, so ``B < 0`` restores high-frequency amplitudes) up to Nyquist.
5. It is low-pass filtered at the final resolution with a raised-cosine edge two shells wide.

Sign convention (RELION's ``rlnBfactorUsedForSharpening``): a map whose amplitudes fall as
``exp(-B_map k²/4)`` has Guinier slope ``-B_map/4``, so the fitted B is ``-B_map``; applying it
flattens the Guinier plot (a second fit gives ~0).

References
----------
P. B. Rosenthal & R. Henderson, "Optimal determination of particle orientation, absolute hand,
and contrast loss in single-particle electron cryomicroscopy", J. Mol. Biol. 333, 721-745 (2003);
RELION ``Postprocessing`` (src/postprocessing.cpp): ``makeGuinierPlot``, ``fitStraightLine``,
``applyFscWeighting``, ``applyBFactorToMap``, ``lowPassFilterMap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import lowpass_filter, shell_index
from cryolab.validate import FSCResolution, MaskedFSC, fsc, fsc_resolution, fsc_to_truth_from_half, masked_fsc_corrected
from cryolab.validate.fsc import _flat_shells, _shell_sums

__all__ = [
    "guinier_plot",
    "BFactorFit",
    "fit_bfactor",
    "fsc_weighting_filter",
    "sharpen",
    "lowpass_at_resolution",
    "PostprocessResult",
    "postprocess",
]


def _check_volume(volume, name: str = "map") -> torch.Tensor:
    volume = as_tensor(volume)
    if volume.dim() != 3 or len(set(volume.shape)) != 1:
        raise InputError(f"{name} must be a cubic (N, N, N) volume, got shape {tuple(volume.shape)}")
    if volume.is_complex():
        raise InputError(f"{name} must be real")
    return volume


def _positive(value, name: str) -> float:
    if value is None or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive number, got {value}")
    return float(value)


def _guinier_from_spectrum(spectrum: torch.Tensor, n: int, pixel_size_A: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_shells = n // 2 + 1
    shells = _flat_shells((n, n, n), spectrum.device)
    sums = _shell_sums(spectrum.flatten().abs()[None], shells, n_shells)[0]
    counts = _shell_sums(torch.ones_like(shells, dtype=torch.float32)[None], shells, n_shells)[0]
    mean = sums / counts
    log_amplitude = torch.where(mean > 0, torch.log(mean.clamp_min(1e-300)), torch.full_like(mean, -math.inf))
    frequency_squared = (torch.arange(n_shells, dtype=torch.float64, device=spectrum.device) / (n * pixel_size_A)) ** 2
    return frequency_squared.float(), log_amplitude.float()


def guinier_plot(volume, pixel_size_A: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Guinier plot of a map: ln(mean |F|) in each shell against the squared frequency.

    Parameters
    ----------
    volume
        ``(N, N, N)`` real map.
    pixel_size_A
        Voxel size in Å.

    Returns
    -------
    frequency_squared : float32 ``(N // 2 + 1,)``
        ``k² = (s / (N · pixel_size_A))²`` in 1/Å² for shells ``s = 0 .. N // 2`` (Nyquist).
    log_amplitude : float32 ``(N // 2 + 1,)``
        Natural log of the mean amplitude of the half-grid samples of each shell (RELION's
        ``makeGuinierPlot``), with the transform divided by ``N³`` as RELION's is; ``-inf``
        where a shell has no amplitude.
    """
    volume = _check_volume(volume)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    return _guinier_from_spectrum(torch.fft.rfftn(volume, norm="forward"), volume.shape[0], pixel_size_A)


@dataclass(frozen=True)
class BFactorFit:
    """A straight-line fit through a Guinier plot.

    Attributes
    ----------
    b_factor_A2 : float
        ``4 × slope`` (Å²): the B-factor that, applied as ``exp(-B k²/4)``, flattens the plot
        over the fitted range. Negative for a map whose amplitudes fall with frequency.
    slope, intercept : float
        Of ``ln|F| = intercept + slope · k²`` (k in 1/Å).
    correlation : float
        Squared correlation coefficient of the fitted points (RELION's ``corr_coeff``).
    lowres_A, highres_A : float
        Resolution range of the fit (Å).
    n_points : int
        Number of shells fitted.
    """

    b_factor_A2: float
    slope: float
    intercept: float
    correlation: float
    lowres_A: float
    highres_A: float
    n_points: int


def fit_bfactor(frequency_squared, log_amplitude, *, lowres_A: float = 10.0, highres_A: float | None = None) -> BFactorFit:
    """Least-squares line through the Guinier points with ``highres_A <= d <= lowres_A``; ``B = 4 × slope``.

    Both limits are inclusive (RELION includes a shell exactly at ``--autob_lowres``).

    Parameters
    ----------
    frequency_squared, log_amplitude
        As returned by :func:`guinier_plot` (1/Å² and ln amplitude). Points with a
        non-finite log amplitude are skipped.
    lowres_A
        Lowest resolution (Å) included (RELION's ``--autob_lowres``, 10 Å).
    highres_A
        Highest resolution (Å) included; ``None`` for every shell up to the end of the plot
        (RELION's ``--autob_highres 0``). :func:`postprocess` uses the final resolution.

    Returns
    -------
    :class:`BFactorFit`.

    Raises
    ------
    InputError
        Fewer than two points in the range.
    """
    x = as_tensor(frequency_squared).double()
    y = as_tensor(log_amplitude).double()
    lowres_A = _positive(lowres_A, "lowres_A")
    if highres_A is not None:
        highres_A = _positive(highres_A, "highres_A")
        if highres_A > lowres_A:
            raise InputError(f"the B-factor fit range is empty: high resolution {highres_A:g} Å is worse than low resolution {lowres_A:g} Å")
    # d <= lowres  <=>  k² >= 1/lowres² (shell 0, k = 0, is never included). Both ends are
    # inclusive, with a relative margin for k² rounded to float32: a shell at exactly 10 Å is in.
    selected = (x >= 1.0 / lowres_A**2 * (1 - 1e-6)) & torch.isfinite(y)
    if highres_A is not None:
        selected &= x <= 1.0 / highres_A**2 * (1 + 1e-6)
    if int(selected.sum()) < 2:
        raise InputError(f"fewer than two Guinier points between {lowres_A:g} Å and {highres_A if highres_A else 'Nyquist'} Å: cannot fit a B-factor")
    xs, ys = x[selected], y[selected]
    x_mean, y_mean = xs.mean(), ys.mean()
    ss_xx = ((xs - x_mean) ** 2).sum()
    ss_yy = ((ys - y_mean) ** 2).sum()
    ss_xy = ((xs - x_mean) * (ys - y_mean)).sum()
    slope = ss_xy / ss_xx
    intercept = y_mean - slope * x_mean
    correlation = ss_xy**2 / (ss_xx * ss_yy) if ss_yy > 0 else torch.tensor(1.0)
    return BFactorFit(
        b_factor_A2=float(4 * slope),
        slope=float(slope),
        intercept=float(intercept),
        correlation=float(correlation),
        lowres_A=lowres_A,
        highres_A=float(highres_A) if highres_A is not None else float(1 / math.sqrt(float(x[selected].max()))),
        n_points=int(selected.sum()),
    )


def fsc_weighting_filter(fsc_curve, shape) -> torch.Tensor:
    """Per-shell weights ``sqrt(2 FSC / (1 + FSC))`` on the rfft grid (Rosenthal & Henderson 2003).

    As RELION's ``applyFscWeighting``: weights apply up to the last shell before the FSC first
    drops below 1e-4; that shell on, and every sample beyond the curve (the corners past
    Nyquist), gets 0; a negative FSC within gives 0.

    Parameters
    ----------
    fsc_curve
        ``(n_shells,)`` half-map FSC (corrected for the mask where one is used).
    shape
        Real-space box ``(N, N, N)``.

    Returns
    -------
    float32 filter of the unshifted rfft shape.
    """
    curve = as_tensor(fsc_curve).double()
    below = torch.nonzero(curve < 1e-4)
    last = (int(below[0, 0]) - 1) if len(below) else curve.shape[-1] - 1
    weights = fsc_to_truth_from_half(curve)  # 0 for FSC <= 0
    shells = shell_index(tuple(shape), rfft=True, device=curve.device)
    grid = weights[shells.clamp(max=curve.shape[-1] - 1)]
    return torch.where(shells <= last, grid, torch.zeros_like(grid)).float()


def _bfactor_to_nyquist(shape, pixel_size_A: float, b_factor_A2: float, device) -> torch.Tensor:
    """``exp(-B k²/4)`` up to Nyquist, 0 beyond (RELION's ``applyBFactorToMap``).

    Computed from integer frequencies, so that a sample exactly at Nyquist is kept whatever the
    rounding of ``k`` in 1/Å.
    """
    n = shape[-1]
    axes = [torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device)] * (len(shape) - 1)
    axes.append(torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64, device=device))
    radius_squared = sum(k**2 for k in torch.meshgrid(*axes, indexing="ij"))  # Fourier pixels²
    k_squared = radius_squared / (n * pixel_size_A) ** 2  # 1/Å²
    envelope = torch.exp(-b_factor_A2 * k_squared / 4)
    return torch.where(radius_squared <= (n / 2) ** 2, envelope, torch.zeros_like(envelope))


def sharpen(volume, pixel_size_A: float, b_factor_A2: float) -> torch.Tensor:
    """Multiply a map's transform by ``exp(-B k²/4)`` (k in 1/Å) up to Nyquist, zero beyond.

    ``B < 0`` sharpens (RELION's convention for the sharpening B-factor), ``B > 0`` blurs;
    the same envelope as :func:`cryolab.fourier.bfactor_filter` but cut at Nyquist, so the
    corners of the cube, which a negative B would amplify most, do not alias back.
    """
    volume = _check_volume(volume)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    spectrum = torch.fft.rfftn(volume)
    filt = _bfactor_to_nyquist(volume.shape, pixel_size_A, float(b_factor_A2), volume.device)
    return torch.fft.irfftn(spectrum * filt, s=volume.shape).to(volume.dtype)


def _lowpass_grid(shape, pixel_size_A: float, resolution_A: float, edge_width_shells: float, device) -> torch.Tensor:
    n = shape[-1]
    shell = round(n * pixel_size_A / resolution_A)  # RELION rounds the filter to a shell
    return lowpass_filter(shape, shell / n, edge_width=edge_width_shells / n, device=device)


def lowpass_at_resolution(volume, pixel_size_A: float, resolution_A: float, *, edge_width_shells: float = 2.0) -> torch.Tensor:
    """Low-pass a map at ``resolution_A`` with a raised-cosine edge ``edge_width_shells`` wide.

    The cut-off is the nearest shell, ``round(N · pixel_size_A / resolution_A)``, and the
    filter falls from 1 to 0 between one shell below and one above it (for the default width
    2), as RELION's ``lowPassFilterMap`` with ``--filter_edge_width 2``.
    """
    volume = _check_volume(volume)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    resolution_A = _positive(resolution_A, "resolution_A")
    grid = _lowpass_grid(volume.shape, pixel_size_A, resolution_A, edge_width_shells, volume.device)
    return torch.fft.irfftn(torch.fft.rfftn(volume) * grid, s=volume.shape).to(volume.dtype)


@dataclass(frozen=True)
class PostprocessResult:
    """Everything :func:`postprocess` computed.

    Attributes
    ----------
    map : ``(N, N, N)`` sharpened, FSC-weighted, low-pass filtered average of the half maps.
    masked_map : the same times the mask, or ``None`` without a mask.
    fsc_unmasked : ``(n_shells,)`` FSC of the half maps as given.
    masked : :class:`cryolab.validate.MaskedFSC` or ``None``.
    fsc_final : the curve the resolution and weighting come from (corrected masked FSC, or the
        unmasked one without a mask or where the mask made it worse, as RELION does).
    resolution : :class:`cryolab.validate.FSCResolution` of ``fsc_final`` at 0.143.
    b_factor_A2 : B applied (Å², negative sharpens); 0 for none.
    bfactor_fit : :class:`BFactorFit` when the B-factor was fitted, else ``None``.
    lowpass_A : resolution (Å) of the final low-pass filter, or ``None`` for none.
    frequency_squared : ``(n_shells,)`` k² (1/Å²) of the Guinier plots.
    guinier_input, guinier_weighted, guinier_sharpened : ``(n_shells,)`` ln amplitudes of the
        averaged map before weighting, after FSC weighting and after the B-factor.
    pixel_size_A : float
    """

    map: torch.Tensor
    masked_map: torch.Tensor | None
    fsc_unmasked: torch.Tensor
    masked: MaskedFSC | None
    fsc_final: torch.Tensor
    resolution: FSCResolution
    b_factor_A2: float
    bfactor_fit: BFactorFit | None
    lowpass_A: float | None
    frequency_squared: torch.Tensor
    guinier_input: torch.Tensor
    guinier_weighted: torch.Tensor
    guinier_sharpened: torch.Tensor
    pixel_size_A: float


def postprocess(
    half_map_a,
    half_map_b,
    pixel_size_A: float,
    *,
    mask=None,
    b_factor_A2: float | str = "auto",
    autob_lowres_A: float = 10.0,
    autob_highres_A: float | None = None,
    fsc_weighting: bool = True,
    lowpass_A: float | str | None = "resolution",
    randomize_at_fsc: float = 0.8,
    seed: int = 0,
) -> PostprocessResult:
    """Sharpen the average of two half maps the way ``relion_postprocess --auto_bfac`` does.

    Parameters
    ----------
    half_map_a, half_map_b
        ``(N, N, N)`` unfiltered, unmasked half maps.
    pixel_size_A
        Voxel size in Å.
    mask
        Optional ``(N, N, N)`` soft mask in [0, 1]: FSC of the masked maps, corrected by phase
        randomisation (from the shell where the unmasked FSC drops below
        ``randomize_at_fsc``, random phases from ``seed``).
    b_factor_A2
        ``"auto"``: fit it (:func:`fit_bfactor`) on the Guinier plot of the FSC-weighted map
        between ``autob_lowres_A`` and ``autob_highres_A``; or a number (Å², negative
        sharpens) to apply as given; 0 for none.
    autob_lowres_A, autob_highres_A
        Fit range in Å. ``autob_highres_A=None``: up to the final resolution (its shell
        included); ``0``: every shell whose FSC-weighted amplitude is nonzero, RELION's
        default (``--autob_highres 0``).
    fsc_weighting
        Weight shells by ``sqrt(2 FSC / (1 + FSC))`` (Rosenthal & Henderson 2003).
    lowpass_A
        ``"resolution"``: low-pass at the final resolution; a number: at that resolution (Å);
        ``None``: no low-pass filter.
    randomize_at_fsc, seed
        Phase-randomisation settings for the mask correction.

    Returns
    -------
    :class:`PostprocessResult`.
    """
    half_map_a = _check_volume(half_map_a, "half map 1")
    half_map_b = _check_volume(half_map_b, "half map 2").to(half_map_a.device)
    if half_map_a.shape != half_map_b.shape:
        raise InputError(f"the half maps have different shapes: {tuple(half_map_a.shape)} and {tuple(half_map_b.shape)}")
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    n = half_map_a.shape[0]
    if not (b_factor_A2 == "auto" or isinstance(b_factor_A2, (int, float))):
        raise InputError(f"b_factor_A2 must be 'auto' or a number of Å², got {b_factor_A2!r}")

    masked = None
    if mask is not None:
        mask = as_tensor(mask, device=half_map_a.device)
        masked = masked_fsc_corrected(half_map_a, half_map_b, mask, randomize_at_fsc=randomize_at_fsc, seed=seed)
        fsc_unmasked = masked.unmasked
        fsc_final = masked.corrected
        # RELION keeps the unmasked curve where the mask would make the resolution worse.
        if fsc_resolution(fsc_unmasked, n, pixel_size_A).shell > fsc_resolution(fsc_final, n, pixel_size_A).shell:
            fsc_final = fsc_unmasked
    else:
        fsc_unmasked = fsc_final = fsc(half_map_a, half_map_b)
    resolution = fsc_resolution(fsc_final, n, pixel_size_A, 0.143)

    average = 0.5 * (half_map_a + half_map_b)
    spectrum = torch.fft.rfftn(average, norm="forward")
    frequency_squared, guinier_input = _guinier_from_spectrum(spectrum, n, pixel_size_A)
    if fsc_weighting:
        spectrum = spectrum * fsc_weighting_filter(fsc_final, average.shape)
    _, guinier_weighted = _guinier_from_spectrum(spectrum, n, pixel_size_A)

    bfactor_fit = None
    if b_factor_A2 == "auto":
        highres = autob_highres_A if autob_highres_A is not None else resolution.resolution_A
        if not math.isfinite(highres):
            raise InputError("the FSC never reaches 0.143 beyond shell 0: no resolution to fit the B-factor to")
        bfactor_fit = fit_bfactor(frequency_squared, guinier_weighted, lowres_A=autob_lowres_A, highres_A=highres if highres > 0 else None)
        b_factor = bfactor_fit.b_factor_A2
    else:
        b_factor = float(b_factor_A2)
    if b_factor != 0:
        spectrum = spectrum * _bfactor_to_nyquist(average.shape, pixel_size_A, b_factor, average.device)
    _, guinier_sharpened = _guinier_from_spectrum(spectrum, n, pixel_size_A)

    applied_lowpass = None
    if lowpass_A == "resolution":
        applied_lowpass = resolution.resolution_A if math.isfinite(resolution.resolution_A) else None
    elif lowpass_A is not None:
        applied_lowpass = _positive(lowpass_A, "lowpass_A")
    if applied_lowpass is not None:
        spectrum = spectrum * _lowpass_grid(average.shape, pixel_size_A, applied_lowpass, 2.0, average.device)

    sharpened = torch.fft.irfftn(spectrum, s=average.shape, norm="forward").to(average.dtype)
    return PostprocessResult(
        map=sharpened,
        masked_map=sharpened * mask if mask is not None else None,
        fsc_unmasked=fsc_unmasked,
        masked=masked,
        fsc_final=fsc_final,
        resolution=resolution,
        b_factor_A2=b_factor,
        bfactor_fit=bfactor_fit,
        lowpass_A=applied_lowpass,
        frequency_squared=frequency_squared,
        guinier_input=guinier_input,
        guinier_weighted=guinier_weighted,
        guinier_sharpened=guinier_sharpened,
        pixel_size_A=pixel_size_A,
    )
