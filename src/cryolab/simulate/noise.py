"""Noise models for simulated particle images: white Gaussian at a stated SNR, and electron counting.

Two models, both documented in docs/conventions.md ("Image contrast and noise"):

**White Gaussian at a target SNR.** ``SNR = var(signal) / var(noise)``, the signal variance taken
over a stated mask: the whole box (``mask_radius_A=None``) or a disc of radius ``mask_radius_A``
about the box centre ``N // 2``. For a data set the noise standard deviation is one number,
``sigma = sqrt(mean_i var_mask(s_i) / SNR)``, calibrated on a set of clean images, so images of
different views and defoci keep their natural spread of signal strength (as in real data).

**Electron counting (Poisson) with a detector model.** A clean image ``s`` (protein positive) is
turned into expected counts per pixel

    λ(x) = D_eff · p² · (1 − c · (h_MTF ⊛ s)(x)),       D_eff = DQE(0) · dose

with ``dose`` in e/Å², pixel size ``p`` in Å and ``c`` the *contrast scale*: the fractional drop
of intensity per unit of the clean image (protein scatters electrons, so the physical intensity
is lower where the protein is; λ is clipped at 0). The counts are ``N ~ Poisson(λ)``. The
detector model is that of an ideal counting detector (McMullan et al. 2009; 2014): the signal is
blurred by the detector MTF before counting, while the counting noise stays white, so that
``DQE(k) = DQE(0) · MTF(k)²``. ``DQE(0) < 1`` is modelled as a lower effective dose (fewer
electrons' worth of information), ``MTF = "none"`` (1 everywhere) or ``"sinc"`` (the pixel
aperture of a counting detector, ``sinc(k)`` with ``k`` in cycles/pixel: 0.64 at Nyquist) or any
callable of ``|k|``. Images are returned contrast-inverted and normalised,
``y = (λ₀ − N) / sqrt(λ₀)`` with ``λ₀ = D_eff p²``, so protein is white and the background has
mean 0 and standard deviation 1; the clean image on that scale is ``sqrt(λ₀) · c · (h_MTF ⊛ s)``.

For a potential map in volts and the weak-phase approximation, ``c = 2 σ_e · p`` where
``σ_e = 2π m λ e / h²`` is the interaction constant (:func:`interaction_constant`) and the factor
``p`` turns a projection summed over voxels into V·Å (Kirkland 2020, §5.2; Vulović et al. 2013).

References
----------
G. McMullan, S. Chen, R. Henderson, A. R. Faruqi, "Detective quantum efficiency of electron area
detectors in electron microscopy", Ultramicroscopy 109, 1126–1143 (2009).
G. McMullan, A. R. Faruqi, D. Clare, R. Henderson, "Comparison of optimal performance at 300 keV
of three direct electron detectors for use in low dose electron microscopy", Ultramicroscopy 147,
156–163 (2014).
M. Vulović, R. B. G. Ravelli, L. J. van Vliet, et al., "Image formation modeling in cryo-electron
microscopy", J. Struct. Biol. 183, 19–32 (2013).
E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 3rd ed., Springer (2020), ch. 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

MTFModel = Union[str, Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class GaussianNoise:
    """White Gaussian noise at a target SNR, the signal variance taken over a stated mask.

    Attributes
    ----------
    snr
        Target ``var(signal) / var(noise)`` (> 0).
    mask_radius_A
        Radius in Å of the disc about the box centre over which the signal variance is taken;
        ``None`` means the whole box.
    """

    snr: float
    mask_radius_A: float | None = None

    def __post_init__(self):
        if not (self.snr > 0 and math.isfinite(self.snr)):
            raise InputError(f"SNR must be a positive number, got {self.snr}")
        if self.mask_radius_A is not None and not self.mask_radius_A > 0:
            raise InputError(f"mask radius must be positive (Å), got {self.mask_radius_A}")

    def describe(self) -> dict:
        return {"model": "gaussian", "snr": self.snr, "snr_definition": "var(signal)/var(noise)",
                "signal_mask": mask_description(self.mask_radius_A)}


@dataclass(frozen=True)
class PoissonNoise:
    """Electron counting noise at a dose, with a contrast scale and an ideal counting detector.

    Attributes
    ----------
    dose_e_per_A2
        Electron dose in e/Å² (> 0).
    contrast_scale
        ``c``: fractional intensity drop per unit of the clean image (see the module docstring).
    dqe0
        Detective quantum efficiency at zero frequency, in (0, 1]; scales the dose.
    mtf
        ``"none"``, ``"sinc"`` or a callable mapping ``|k|`` (cycles/pixel) to the MTF.
    """

    dose_e_per_A2: float
    contrast_scale: float
    dqe0: float = 1.0
    mtf: MTFModel = "none"

    def __post_init__(self):
        if not (self.dose_e_per_A2 > 0 and math.isfinite(self.dose_e_per_A2)):
            raise InputError(f"dose must be positive (e/Å²), got {self.dose_e_per_A2}")
        if not (self.contrast_scale > 0 and math.isfinite(self.contrast_scale)):
            raise InputError(f"contrast scale must be positive, got {self.contrast_scale}")
        if not 0 < self.dqe0 <= 1:
            raise InputError(f"DQE(0) must be in (0, 1], got {self.dqe0}")
        if isinstance(self.mtf, str) and self.mtf not in ("none", "sinc"):
            raise InputError(f"unknown MTF model {self.mtf!r}; use 'none', 'sinc' or a callable")

    def mean_counts(self, pixel_size_A: float) -> float:
        """``λ₀ = DQE(0) · dose · p²``: expected counts per background pixel."""
        return self.dqe0 * self.dose_e_per_A2 * pixel_size_A**2

    def describe(self) -> dict:
        return {"model": "poisson", "dose_e_per_A2": self.dose_e_per_A2, "contrast_scale": self.contrast_scale,
                "dqe0": self.dqe0, "mtf": self.mtf if isinstance(self.mtf, str) else "custom",
                "detector": "ideal counting: signal blurred by MTF before counting, white counting noise, "
                            "DQE(k) = DQE(0)·MTF(k)^2",
                "output": "(mean_counts - counts)/sqrt(mean_counts): protein white, background mean 0 std 1"}


def mask_description(mask_radius_A: float | None) -> str:
    """How a signal mask is named in metadata: ``"box"`` or ``"circle radius R A"``."""
    return "box" if mask_radius_A is None else f"circle radius {mask_radius_A:g} A about the box centre"


def signal_mask(box_size: int, pixel_size_A: float, *, radius_A: float | None = None) -> torch.Tensor:
    """Boolean ``(N, N)`` mask over which the signal variance is measured.

    ``radius_A=None`` selects the whole box; otherwise the pixels whose distance from the centre
    ``N // 2`` is at most ``radius_A / pixel_size_A``.
    """
    if pixel_size_A <= 0:
        raise InputError(f"pixel size must be positive (Å), got {pixel_size_A}")
    if radius_A is None:
        return torch.ones(box_size, box_size, dtype=torch.bool)
    if not radius_A > 0:
        raise InputError(f"mask radius must be positive (Å), got {radius_A}")
    c = torch.arange(box_size, dtype=torch.float32) - box_size // 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    mask = r2 <= (radius_A / pixel_size_A) ** 2
    if not mask.any():
        raise InputError(f"signal mask of radius {radius_A} Å holds no pixel at {pixel_size_A} Å/pixel")
    return mask


def masked_variance(images, mask) -> torch.Tensor:
    """Variance of each image's pixels inside ``mask`` (about their mean within the mask).

    Parameters
    ----------
    images
        ``(..., N, N)`` real images.
    mask
        ``(N, N)`` boolean mask.

    Returns
    -------
    ``(...)`` population variances (divided by the number of mask pixels).
    """
    images = as_tensor(images)
    mask = as_tensor(mask, dtype=torch.bool)
    values = images[..., mask]
    return values.var(dim=-1, unbiased=False)


def gaussian_noise_sigma(clean_images, snr: float, *, mask) -> float:
    """Noise standard deviation giving ``mean_i var_mask(clean_i) / sigma² = snr``."""
    if not snr > 0:
        raise InputError(f"SNR must be positive, got {snr}")
    signal_var = float(masked_variance(clean_images, mask).double().mean())
    if not signal_var > 0:
        raise InputError("the clean images have zero variance inside the signal mask; cannot set an SNR")
    return math.sqrt(signal_var / snr)


def measured_snr(clean_images, noisy_images, *, mask) -> float:
    """Empirical SNR of a set: ``mean_i var_mask(clean_i) / var(noisy − clean)`` (all pixels)."""
    clean = as_tensor(clean_images).double()
    noise = as_tensor(noisy_images).double() - clean
    return float(masked_variance(clean, mask).mean() / noise.var(unbiased=False))


def add_gaussian_noise(images, sigma: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images + sigma · n`` with ``n`` i.i.d. standard normal (float32)."""
    images = as_tensor(images, dtype=torch.float32)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return images + sigma * noise


def interaction_constant(voltage_kV: float) -> float:
    """Relativistic interaction constant ``σ_e`` in rad / (V·Å) (Kirkland 2020, eq. 5.6).

    ``σ_e = 2π m e λ / h²`` with the relativistic mass; 0.000653 rad/(V·Å) at 300 kV.
    """
    volts = voltage_kV * 1e3
    m0c2_eV = 510998.95
    wavelength_A = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    # Kirkland: sigma = (2π / (λ V)) · (m0c² + eV) / (2 m0c² + eV)
    return 2 * math.pi / (wavelength_A * volts) * (m0c2_eV + volts) / (2 * m0c2_eV + volts)


def detector_mtf(shape: tuple[int, int], mtf: MTFModel) -> torch.Tensor:
    """The detector MTF on the rfft grid of an image of ``shape`` (``(h, w // 2 + 1)``).

    ``"none"``: 1; ``"sinc"``: ``sinc(kx) · sinc(ky)`` (square pixel aperture, k in cycles/pixel);
    a callable receives ``|k|`` in cycles/pixel.
    """
    h, w = shape
    ky = torch.fft.fftfreq(h)[:, None]
    kx = torch.fft.rfftfreq(w)[None, :]
    if isinstance(mtf, str):
        if mtf == "none":
            return torch.ones(h, w // 2 + 1)
        if mtf == "sinc":
            return torch.sinc(kx) * torch.sinc(ky)
        raise InputError(f"unknown MTF model {mtf!r}; use 'none', 'sinc' or a callable")
    return as_tensor(mtf(torch.sqrt(kx**2 + ky**2)), dtype=torch.float32).expand(h, w // 2 + 1)


def apply_mtf(images, mtf: MTFModel) -> torch.Tensor:
    """Filter ``(..., N, N)`` images by the detector MTF (identity for ``"none"``)."""
    images = as_tensor(images, dtype=torch.float32)
    if isinstance(mtf, str) and mtf == "none":
        return images
    shape = tuple(images.shape[-2:])
    filt = detector_mtf(shape, mtf)
    return torch.fft.irfft2(torch.fft.rfft2(images) * filt, s=shape)


def poisson_counts(images, dose_e_per_A2: float, pixel_size_A: float, *, contrast_scale: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Electron counts ``N ~ Poisson(dose · p² · max(0, 1 − c · image))`` per pixel (float32).

    No detector model here (see :func:`poisson_noise`); for a flat (zero) image the counts have
    mean = variance = ``dose · p²``.
    """
    images = as_tensor(images, dtype=torch.float32)
    rate = dose_e_per_A2 * pixel_size_A**2 * torch.clamp(1 - contrast_scale * images, min=0)
    return torch.poisson(rate, generator=generator)


def poisson_noise(images, model: PoissonNoise, pixel_size_A: float, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Counting noise on clean ``(..., N, N)`` images under ``model``; see the module docstring.

    Returns
    -------
    (clean, noisy)
        Both contrast-inverted and normalised: ``noisy = (λ₀ − N) / sqrt(λ₀)`` and
        ``clean = sqrt(λ₀) · c · (h_MTF ⊛ image)``, its expectation (while λ stays positive).
    """
    blurred = apply_mtf(images, model.mtf)
    lam0 = model.mean_counts(pixel_size_A)
    counts = poisson_counts(blurred, model.dqe0 * model.dose_e_per_A2, pixel_size_A,
                            contrast_scale=model.contrast_scale, generator=generator)
    scale = math.sqrt(lam0)
    clean = blurred * (scale * model.contrast_scale)
    noisy = (lam0 - counts) / scale
    return clean, noisy
