"""Wave-optical image formation: phase objects, Fresnel propagation, the objective lens, multislice.

The CTF of :mod:`cryolab.ctf` is the *linear* end result of the physics in this module. Here the
electron wave itself is followed: the specimen's Coulomb potential (volts) shifts the phase of
the incident plane wave (``transmission_function``), the wave propagates through free space
(``fresnel_propagator``, ``propagate``) and through the aberrated objective lens
(``objective_lens_transfer``), and the detector records the intensity ``|ψ|²``
(``image_intensity_from_exit_wave``). For a thin, weak specimen this reduces to the CTF applied
to the projected potential (``weak_phase_image``); for a strong or thick one it does not
(``projection_approximation_image`` versus ``multislice`` / ``multislice_image``).

Sign conventions (docs/conventions.md, "CTF")
---------------------------------------------
Waves are written ``ψ(r) = Σ_k ψ̂(k) exp(+2πi k·r)`` (torch's inverse FFT) travelling towards
``+z`` as ``exp(+2πi z / λ)``, as in Kirkland (2020). With ``χ(k)`` the CONVENTIONS/RELION phase
``π λ Δf k² − (π/2) Cs λ³ k⁴ + phase_shift`` (positive Δf = underfocus) *without* its
``arcsin(Q0)`` term:

- Free-space propagation over ``Δz`` Å downstream multiplies ``ψ̂`` by
  ``P(k) = exp(−iπ λ Δz k²)`` (Kirkland 2020, ch. 6.4).
- The objective lens multiplies ``ψ̂`` by ``T(k) = exp(−iχ_K(k))`` with Kirkland's aberration
  phase ``χ_K = −χ``, i.e. ``T = exp(+iχ)``. Its defocus factor ``exp(+iπ λ Δf k²)`` equals
  ``P`` with ``Δz = −Δf``: an underfocused image is the exit wave propagated back to the plane
  ``Δf`` *upstream* of the specimen, where the weaker lens focuses. Overfocus is forward
  propagation.
- A positive potential advances the phase (``exp(+iσV_z)``) and acts as a converging lens, so
  the intensity of the wave propagated downstream (overfocus) is bright over the particle, and
  the underfocused raw intensity is *dark*: ``I ≈ 1 − 2σ (CTF ⊛ V_z)``, as in a real micrograph.
- cryolab's image convention is protein white (RELION after "invert contrast"), so the *image
  contrast* returned by the ``*_image`` functions is ``(1 − I) / 2`` (``contrast_from_intensity``).
  For a weak phase object it equals ``ctf_2d`` applied to ``σ V_z`` — pinned in
  tests/test_physics.py.

Amplitude contrast
------------------
RELION's ``Q0`` enters ``ctf_2d`` as ``arcsin(Q0)`` in χ, i.e. ``CTF = √(1−Q0²) sin χ + Q0 cos χ``.
In wave optics it is a property of the specimen: the scattering potential is made complex,
``V → V (√(1−Q0²) + i Q0)``, so that a fraction ``√(1−Q0²)`` of the scattering shifts the phase
and a fraction ``Q0`` absorbs (``exp(iσV_z(√(1−Q0²) + iQ0))``; Erickson & Klug 1971; the same
split as cryoJAX's wave transfer theory). The image functions take ``Q0`` from ``ctf_params``;
``objective_lens_transfer`` has no ``arcsin(Q0)`` term. ``transmission_function(absorption=a)``
is the plain form ``exp(iσV_z (1 + i a))``, with ``a = Q0 / √(1−Q0²)`` for the same contrast.

The unscattered beam (``k = 0``) passes the lens unchanged, ``T(0) = 1``: the phase plate shift,
the B-factor envelope ``exp(−B k²/4)`` and ``scale`` act on the scattered wave only (the
envelope and scale are linear-theory quantities, applied to the wave so that the linear image
carries them once). In the full (nonlinear) images a uniform potential is a global phase and
invisible, so their mean differs from ``ctf_2d``'s ``k = 0`` term when ``phase_shift ≠ 0`` or
``scale ≠ 1``; the linear ``weak_phase_image`` separates the beams and matches ``ctf_2d`` at
every k.

Arrays are ``(..., y, x)`` images and ``(..., z, y, x)`` volumes with cubic voxels of
``pixel_size_A``; Fourier arrays use the full, unshifted FFT layout (waves are complex).
Leading dimensions broadcast against the fields of ``ctf_params`` and ``distance_A``. Inputs
given as float64 / complex128 torch tensors are computed and returned in double precision;
everything else in float32 / complex64.

References
----------
E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 3rd ed., Springer (2020):
eq. 5.6 (interaction constant), ch. 6.4-6.8 (multislice, Fresnel propagator, the 2/3 band
limit), ch. 3 and 10 (aberration phase, transfer function).
H. P. Erickson & A. Klug, Phil. Trans. R. Soc. B 261, 105-118 (1971) (amplitude contrast).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.ctf import ctf_phase_chi, electron_wavelength_A
from cryolab.errors import InputError
from cryolab.fourier.grids import fftfreq_grid

__all__ = [
    "interaction_constant_per_V_A",
    "transmission_function",
    "fresnel_propagator",
    "propagate",
    "objective_lens_transfer",
    "image_intensity_from_exit_wave",
    "contrast_from_intensity",
    "weak_phase_image",
    "projection_approximation_image",
    "multislice",
    "multislice_image",
]

_ELECTRON_REST_ENERGY_EV = 510998.95  # m0 c² (CODATA 2018)
_KIRKLAND_BANDLIMIT = 2.0 / 3.0


# --------------------------------------------------------------------------------------------
# helpers


def _is_double(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype in (torch.float64, torch.complex128)


def _dtypes(double: bool) -> tuple[torch.dtype, torch.dtype]:
    return (torch.float64, torch.complex128) if double else (torch.float32, torch.complex64)


def _real_input(x, name: str, min_ndim: int) -> torch.Tensor:
    double = _is_double(x)
    t = as_tensor(x, dtype=torch.float64 if double else None)
    if t.is_complex():
        raise InputError(f"{name} must be real (volts or V·Å), got a complex array")
    if t.ndim < min_ndim:
        raise InputError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    return t.to(_dtypes(double)[0])


def _wave_input(x, name: str = "wave") -> torch.Tensor:
    double = _is_double(x)
    t = as_tensor(x, dtype=torch.complex128 if double else None)
    if t.ndim < 2:
        raise InputError(f"{name} must be an image (..., y, x), got shape {tuple(t.shape)}")
    return t.to(_dtypes(double)[1])


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise InputError(f"{name} must be positive and finite, got {value}")
    return value


def _voltage_V(voltage_kV) -> torch.Tensor:
    v = as_tensor(voltage_kV, dtype=torch.float64)
    if not bool(torch.all(v > 0)):
        raise InputError(f"voltage_kV must be positive, got {voltage_kV}")
    return v * 1e3


def _single_voltage_kV(voltage_kV) -> float:
    """One accelerating voltage (a tensor of equal values is accepted), for propagation."""
    v = as_tensor(voltage_kV, dtype=torch.float64).flatten()
    if v.numel() == 0 or not bool(torch.all(v == v[0])):
        raise InputError(f"one accelerating voltage is needed here, got {voltage_kV}")
    return float(v[0])


def _wavelength_A(voltage_kV) -> torch.Tensor:
    """Relativistic wavelength (Å) from :func:`cryolab.ctf.electron_wavelength_A`, as float64."""
    return electron_wavelength_A(as_tensor(voltage_kV, dtype=torch.float64))


def _interaction_constant(voltage_kV) -> torch.Tensor:
    volts = _voltage_V(voltage_kV)
    lam = _wavelength_A(voltage_kV)
    e0 = _ELECTRON_REST_ENERGY_EV
    return 2.0 * math.pi / (lam * volts) * (e0 + volts) / (2.0 * e0 + volts)


def _frequency_grid(shape: Sequence[int], pixel_size_A: float,
                    device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kx, ky)`` in 1/Å on the full, unshifted FFT grid of an image, float64."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"shape must be an image shape (h, w), got {shape}")
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    grid = fftfreq_grid(shape, rfft=False, fftshift=False, device=device).to(torch.float64)
    # fftfreq_grid rounds j / N to float32: recover the exact integer index j first
    h, w = shape
    kx = torch.round(grid[..., 0] * w) / (w * pixel_size_A)
    ky = torch.round(grid[..., 1] * h) / (h * pixel_size_A)
    return kx, ky


def _bandlimit_mask(shape, pixel_size_A: float, fraction: float | None, device=None) -> torch.Tensor | None:
    """Disc ``|k| ≤ fraction · Nyquist`` on the full FFT grid, or None for no limit."""
    if fraction is None:
        return None
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise InputError(f"bandlimit_fraction must lie in (0, 1], got {fraction}")
    kx, ky = _frequency_grid(shape, pixel_size_A, device)
    k_max = fraction / (2.0 * pixel_size_A)
    return (kx**2 + ky**2) <= k_max**2 * (1 + 1e-12)


def _ctf_field(params, name: str) -> torch.Tensor:
    """A CTFParams field as float64 with two trailing singleton axes to broadcast over (y, x)."""
    return as_tensor(getattr(params, name), dtype=torch.float64)[..., None, None]


def _amplitude_contrast(params) -> torch.Tensor:
    q0 = as_tensor(getattr(params, "amplitude_contrast"), dtype=torch.float64)
    if not bool(torch.all((q0 >= 0) & (q0 < 1))):
        raise InputError(f"amplitude_contrast must lie in [0, 1), got {params.amplitude_contrast}")
    return q0


def _scattering_factor(params) -> torch.Tensor:
    """``√(1−Q0²) + i Q0``, shape ``(..., 1, 1)``: turns a real potential into the scattering potential."""
    if params is None:
        return torch.ones((), dtype=torch.complex128)
    q0 = _amplitude_contrast(params)[..., None, None]
    return torch.complex(torch.sqrt(1 - q0**2), q0)


def _check_voltage_matches(voltage_kV, params) -> None:
    if params is None:
        return
    v_params = as_tensor(params.voltage_kV, dtype=torch.float64)
    v = as_tensor(voltage_kV, dtype=torch.float64)
    if not bool(torch.allclose(v_params, v, rtol=1e-6, atol=0)):
        raise InputError(f"voltage_kV={voltage_kV} disagrees with ctf_params.voltage_kV={params.voltage_kV}")


def _fft2(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft2(x, dim=(-2, -1))


def _ifft2(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(x, dim=(-2, -1))


def _apply_bandlimit(wave: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return wave
    return _ifft2(_fft2(wave) * mask)


# --------------------------------------------------------------------------------------------
# specimen


def interaction_constant_per_V_A(voltage_kV) -> torch.Tensor:
    """Relativistic interaction constant σ_e in rad / (V·Å): the phase shift per unit projected potential.

    ``σ = 2π m e λ / h² = (2π / (λ V)) · (m0c² + eV) / (2 m0c² + eV)`` (Kirkland 2020, eq. 5.6),
    with λ from :func:`cryolab.ctf.electron_wavelength_A` (CONVENTIONS' formula) and V the
    accelerating voltage in volts. About 6.53e-4 rad/(V·Å) at 300 kV, 7.29e-4 at 200 kV.

    Parameters
    ----------
    voltage_kV
        Accelerating voltage(s) in kV, scalar or any shape.

    Returns
    -------
    float32 tensor of the shape of ``voltage_kV``.
    """
    return _interaction_constant(voltage_kV).to(torch.float32)


def transmission_function(projected_potential_V_A, voltage_kV, *, weak_phase: bool = False,
                          absorption: float = 0.0) -> torch.Tensor:
    """Transmission function of a thin specimen: ``t = exp(iσ V_z (1 + i·absorption))``.

    The phase-object (projection) approximation: the wave leaving a thin slice is the incident
    wave times ``t``. A positive potential advances the phase. ``absorption`` is the ratio of the
    imaginary (absorptive) to the real potential, so ``|t| = exp(−σ·absorption·V_z) ≤ 1``; use
    ``Q0 / √(1−Q0²)`` to reproduce RELION's amplitude contrast ratio Q0 (module docstring).

    Parameters
    ----------
    projected_potential_V_A
        ``(..., y, x)`` projected Coulomb potential ``V_z = ∫ V dz`` in V·Å.
    voltage_kV
        Accelerating voltage in kV (scalar).
    weak_phase
        If True return the first-order expansion ``1 + iσV_z (1 + i·absorption)`` (weak phase
        object approximation) instead of the exponential.
    absorption
        Non-negative ratio of imaginary to real potential.

    Returns
    -------
    complex64 (complex128 for double input) tensor of the input's shape.
    """
    vz = _real_input(projected_potential_V_A, "projected_potential_V_A", 2)
    if float(absorption) < 0:
        raise InputError(f"absorption must be non-negative, got {absorption}")
    sigma = float(_interaction_constant(_single_voltage_kV(voltage_kV)))
    phase = sigma * vz.to(torch.float64)
    exponent = torch.complex(-float(absorption) * phase, phase)  # iσV(1 + i a)
    t = 1 + exponent if weak_phase else torch.exp(exponent)
    return t.to(_dtypes(_is_double(projected_potential_V_A))[1])


# --------------------------------------------------------------------------------------------
# free-space propagation


def _fresnel_propagator(shape, pixel_size_A, distance_A, voltage_kV, bandlimit_fraction,
                        device=None) -> torch.Tensor:
    """complex128 ``exp(−iπ λ Δz k²)`` (times the band-limit disc), shape ``(..., h, w)``."""
    kx, ky = _frequency_grid(shape, pixel_size_A, device)
    lam = float(_wavelength_A(_single_voltage_kV(voltage_kV)))
    dz = as_tensor(distance_A, dtype=torch.float64, device=device)[..., None, None]
    phase = -math.pi * lam * dz * (kx**2 + ky**2)
    p = torch.polar(torch.ones_like(phase), phase)
    mask = _bandlimit_mask(shape, pixel_size_A, bandlimit_fraction, device)
    return p if mask is None else p * mask


def fresnel_propagator(shape: Sequence[int], pixel_size_A: float, distance_A, voltage_kV, *,
                       bandlimit_fraction: float | None = None) -> torch.Tensor:
    """Fresnel (paraxial) free-space propagator ``P(k) = exp(−iπ λ Δz k²)`` in Fourier space.

    Multiplying a wave's FFT by ``P`` carries it ``Δz`` Å downstream (towards +z, the direction
    of travel); negative ``Δz`` propagates back. Underfocus by Δf images the plane ``Δf``
    upstream, so ``P(−Δf)`` equals the defocus part of :func:`objective_lens_transfer` (Kirkland
    2020, ch. 6.4; module docstring for the signs).

    Parameters
    ----------
    shape
        Real-space image shape ``(h, w)``.
    pixel_size_A
        Pixel size in Å.
    distance_A
        Propagation distance Δz in Å; scalar or a tensor of batch shape ``(...)``.
    voltage_kV
        Accelerating voltage in kV.
    bandlimit_fraction
        If given, zero all frequencies with ``|k| > bandlimit_fraction · Nyquist`` (Kirkland's
        anti-aliasing limit is 2/3). ``None``: no limit, ``|P| = 1`` and propagation is unitary.

    Returns
    -------
    complex64 tensor ``(..., h, w)`` (complex128 if ``distance_A`` is a float64 tensor), full
    unshifted FFT layout (zero frequency at index 0).
    """
    p = _fresnel_propagator(shape, pixel_size_A, distance_A, voltage_kV, bandlimit_fraction)
    return p.to(_dtypes(_is_double(distance_A))[1])


def propagate(wave, pixel_size_A: float, distance_A, voltage_kV, *,
              bandlimit_fraction: float | None = None) -> torch.Tensor:
    """Propagate a wave ``Δz`` Å through vacuum: ``IFFT(FFT(ψ) · P)`` with :func:`fresnel_propagator`.

    Parameters
    ----------
    wave
        ``(..., y, x)`` complex wave (a real array is taken as complex).
    pixel_size_A, distance_A, voltage_kV, bandlimit_fraction
        As for :func:`fresnel_propagator`; ``distance_A`` broadcasts against the batch dimensions.

    Returns
    -------
    complex tensor ``(..., y, x)`` (batch dimensions broadcast with those of ``distance_A``).
    Without a band limit the L2 norm is preserved, and ``propagate(propagate(ψ, d1), d2)``
    equals ``propagate(ψ, d1 + d2)``.
    """
    psi = _wave_input(wave)
    p = _fresnel_propagator(psi.shape[-2:], pixel_size_A, distance_A, voltage_kV, bandlimit_fraction,
                            psi.device)
    return _ifft2(_fft2(psi) * p.to(psi.dtype))


# --------------------------------------------------------------------------------------------
# objective lens and detection


def _aberration_phase(params, shape, pixel_size_A: float) -> torch.Tensor:
    """CONVENTIONS' χ(k) without arcsin(Q0): ``π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + phase_shift``.

    Evaluated by :func:`cryolab.ctf.ctf_phase_chi` in float64 on the full FFT grid; returns
    float64 ``(..., h, w)``.
    """
    params = params.to(torch.float64)
    kx, ky = _frequency_grid(shape, pixel_size_A, device=params.device)
    chi = ctf_phase_chi(params, torch.stack([kx, ky], dim=-1))
    return chi - torch.asin(_ctf_field(params, "amplitude_contrast"))


def _lens_transfer(shape, pixel_size_A, params, *, unscattered_beam: bool, device=None) -> torch.Tensor:
    """complex128 ``scale · exp(−B k²/4) · exp(iχ)``; with ``unscattered_beam`` ``T(0) = 1``."""
    chi = _aberration_phase(params, shape, pixel_size_A)
    kx, ky = _frequency_grid(shape, pixel_size_A, params.device)
    k2 = kx**2 + ky**2
    envelope = _ctf_field(params, "scale") * torch.exp(-_ctf_field(params, "bfactor_A2") * k2 / 4)
    envelope, chi = torch.broadcast_tensors(envelope, chi)
    t = torch.polar(envelope.contiguous(), chi.contiguous())
    if unscattered_beam:
        t[..., 0, 0] = 1.0
    return t if device is None else t.to(device)


def objective_lens_transfer(shape: Sequence[int], pixel_size_A: float, ctf_params) -> torch.Tensor:
    """Wave transfer function of the objective lens, ``T(k) = exp(−iχ_K(k)) = exp(+iχ(k))``.

    ``χ(k) = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + phase_shift`` is CONVENTIONS' aberration phase
    without the ``arcsin(Q0)`` term (amplitude contrast belongs to the specimen here, see the
    module docstring); ``χ_K = −χ`` is Kirkland's aberration function (positive Δf = underfocus,
    Kirkland 2020, ch. 3 and 10). Scattered beams (``k ≠ 0``) are also multiplied by
    ``scale · exp(−B k² / 4)``; the unscattered beam passes unchanged, ``T(0) = 1``. For a weak
    phase object the image then carries exactly ``ctf_2d`` (see :func:`weak_phase_image`).

    Parameters
    ----------
    shape
        Real-space image shape ``(h, w)``.
    pixel_size_A
        Pixel size in Å.
    ctf_params
        :class:`cryolab.ctf.CTFParams`; fields of batch shape ``(...)`` broadcast.

    Returns
    -------
    complex64 tensor ``(..., h, w)`` (complex128 for float64 parameters), full unshifted FFT
    layout.
    """
    t = _lens_transfer(shape, pixel_size_A, ctf_params, unscattered_beam=True)
    return t.to(_dtypes(ctf_params.dtype == torch.float64)[1])


def image_intensity_from_exit_wave(exit_wave, ctf_params, pixel_size_A: float) -> torch.Tensor:
    """Image intensity ``|IFFT(FFT(ψ) · T)|²`` recorded for an exit wave ψ (raw micrograph sign).

    ``T`` is :func:`objective_lens_transfer`. Incident intensity is 1, so a specimen lowers or
    raises ``I`` around 1; with underfocus a positive potential appears dark here, as in a raw
    micrograph. :func:`contrast_from_intensity` turns it into cryolab's protein-white contrast.

    Parameters
    ----------
    exit_wave
        ``(..., y, x)`` complex exit wave (unit incident amplitude).
    ctf_params
        :class:`cryolab.ctf.CTFParams` (its ``amplitude_contrast`` is not used here: it belongs
        to the specimen, see :func:`transmission_function`).
    pixel_size_A
        Pixel size in Å.

    Returns
    -------
    real tensor ``(..., y, x)`` (float32, or float64 for complex128 input).
    """
    psi = _wave_input(exit_wave, "exit_wave")
    t = _lens_transfer(psi.shape[-2:], pixel_size_A, ctf_params, unscattered_beam=True, device=psi.device)
    t = t.to(psi.dtype)
    image_wave = _ifft2(_fft2(psi) * t)
    return image_wave.abs() ** 2


def contrast_from_intensity(intensity) -> torch.Tensor:
    """Image contrast in cryolab's protein-white convention: ``(1 − I) / 2``.

    For a weak phase object ``I ≈ 1 − 2σ (CTF ⊛ V_z)``, so this is ``σ (CTF ⊛ V_z)``: the
    projected potential (scaled by σ, in radians) filtered by ``ctf_2d``, positive where a
    positive potential sits at low frequencies under underfocus (docs/conventions.md, "Image
    contrast"). The factor 1/2 makes it the phase in radians rather than twice it.
    """
    double = _is_double(intensity)
    i = as_tensor(intensity, dtype=torch.float64 if double else None)
    return (1 - i) / 2


def _specimen_exponent(vz: torch.Tensor, sigma, factor: torch.Tensor) -> torch.Tensor:
    """``iσ V_z · factor`` in complex128; σ a number or a ``(..., 1, 1)`` tensor."""
    return 1j * sigma * vz.to(torch.float64) * factor


def weak_phase_image(projected_potential_V_A, ctf_params, pixel_size_A: float) -> torch.Tensor:
    """Linear (weak-phase-object) image contrast of a projected potential; equals ``ctf_2d ⊛ σV_z``.

    The exit wave is linearised into the unscattered beam and the scattered wave,
    ``ψ = 1 + s`` with ``s = iσV_z (√(1−Q0²) + iQ0)``. The lens passes the unscattered beam
    unchanged and multiplies the scattered wave by ``T_s(k) = scale · exp(−Bk²/4) · exp(+iχ(k))``
    at every k (the k = 0 part of ``s`` included, as linear theory and ``ctf_2d`` do). Keeping the
    intensity to first order in ``s``, ``I = 1 + 2 Re IFFT(FFT(s) · T_s)``; as ``s`` is a real map
    times a constant and χ is even, ``2 Re(...)`` collapses to
    ``−2σ IFFT(FT(V_z) · (√(1−Q0²) sin χ + Q0 cos χ) · scale · exp(−Bk²/4))`` — that is
    ``−2σ CTF ⊛ V_z`` with RELION's ``CTF = sin(χ + arcsin Q0)``. The returned contrast
    ``(1 − I)/2`` is therefore ``σ · (CTF ⊛ V_z)`` (protein white under underfocus). The wave
    optics here does not call ``ctf_2d``; tests/test_physics.py checks the identity, which pins
    the signs of the propagator, the lens and the amplitude contrast.

    It is the first-order term of :func:`projection_approximation_image`, except at k = 0 when
    ``phase_shift ≠ 0`` or ``scale ≠ 1``: the full image cannot tell the mean potential from the
    unscattered beam (a uniform phase is invisible) and passes both unchanged.

    Parameters
    ----------
    projected_potential_V_A
        ``(..., y, x)`` projected potential in V·Å (real).
    ctf_params
        :class:`cryolab.ctf.CTFParams`; the voltage and Q0 come from it.
    pixel_size_A
        Pixel size in Å.

    Returns
    -------
    real tensor ``(..., y, x)``: contrast in radians (dimensionless), float32 (float64 for double input).
    """
    double = _is_double(projected_potential_V_A)
    vz = _real_input(projected_potential_V_A, "projected_potential_V_A", 2)
    sigma = _interaction_constant(ctf_params.voltage_kV)[..., None, None]
    scattered = _specimen_exponent(vz, sigma, _scattering_factor(ctf_params))
    t = _lens_transfer(vz.shape[-2:], pixel_size_A, ctf_params, unscattered_beam=False, device=vz.device)
    first_order = 2 * _ifft2(_fft2(scattered) * t).real  # I − 1 to first order in s
    return (-first_order / 2).to(_dtypes(double)[0])


def projection_approximation_image(projected_potential_V_A, ctf_params, pixel_size_A: float, *,
                                   bandlimit_fraction: float | None = None) -> torch.Tensor:
    """Image contrast of a thin specimen in the phase-object (projection) approximation, to all orders.

    The whole specimen is one slice at the reference plane (defocus is measured from it):
    ``ψ = exp(iσV_z (√(1−Q0²) + iQ0))``, ``I = |IFFT(FFT(ψ) · T)|²``, contrast ``(1 − I)/2``.
    For ``σV_z ≪ 1`` this tends to :func:`weak_phase_image`; for a strong phase object it departs
    from linear theory (the ``|s|²`` and higher terms). For a 3D map pass
    ``potential.sum(-3) * pixel_size_A``; :func:`multislice_image` with the same map and odd
    ``nz`` refers to the same plane.

    Parameters
    ----------
    projected_potential_V_A
        ``(..., y, x)`` projected potential in V·Å.
    ctf_params
        :class:`cryolab.ctf.CTFParams`; the voltage and Q0 come from it.
    pixel_size_A
        Pixel size in Å.
    bandlimit_fraction
        Optional band limit of the transmission function, as fraction of Nyquist (use 2/3 to
        compare with :func:`multislice_image`).

    Returns
    -------
    real tensor ``(..., y, x)``: contrast, float32 (float64 for double input).
    """
    double = _is_double(projected_potential_V_A)
    vz = _real_input(projected_potential_V_A, "projected_potential_V_A", 2)
    sigma = _interaction_constant(ctf_params.voltage_kV)[..., None, None]
    psi = torch.exp(_specimen_exponent(vz, sigma, _scattering_factor(ctf_params)))
    psi = _apply_bandlimit(psi, _bandlimit_mask(vz.shape[-2:], pixel_size_A, bandlimit_fraction))
    intensity = image_intensity_from_exit_wave(psi, ctf_params, pixel_size_A)
    return contrast_from_intensity(intensity).to(_dtypes(double)[0])


# --------------------------------------------------------------------------------------------
# multislice


def _slice_bounds(nz: int, planes_per_slice: int) -> list[tuple[int, int]]:
    return [(start, min(start + planes_per_slice, nz)) for start in range(0, nz, planes_per_slice)]


def multislice(potential_3d, pixel_size_A: float, slice_thickness_A: float, voltage_kV, *,
               ctf_params=None, bandlimit_fraction: float | None = _KIRKLAND_BANDLIMIT) -> torch.Tensor:
    """Multislice exit wave of a thick specimen (Kirkland 2020, ch. 6.4-6.8).

    The beam travels towards +z: plane index 0 is the entrance surface. (A projection does not
    care about the direction; here it decides which side of the specimen meets the beam first
    and so the sign of the defocus change across the specimen: material at ``z > 0`` lies
    further from the plane an underfocused lens images, i.e. is more underfocused.)
    The potential is cut along z into slices of ``slice_thickness_A`` (a whole number of
    planes; the last slice may be thinner). Each slice's projected potential
    ``V_n = pixel_size_A · Σ_planes V`` becomes a transmission function
    ``t_n = exp(iσ V_n (√(1−Q0²) + iQ0))`` lumped at the slice's mid-plane, and the wave is
    propagated between mid-planes with :func:`fresnel_propagator`:
    ``ψ_{n+1} = IFFT(P(Δz_n) · FFT(t_n ψ_n))``, starting from a unit plane wave. Both ``t_n`` and
    ``P`` are band-limited to ``bandlimit_fraction`` of Nyquist (2/3: Kirkland's rule, which
    keeps the products ``t_n ψ_n`` free of aliasing). The exit wave is finally propagated back
    to the reference plane ``z = 0`` (index ``nz // 2``, CONVENTIONS' box centre), the plane the
    projection approximation and ``ctf_2d``'s defocus refer to; the objective lens then acts on
    it if ``ctf_params`` is given.

    Parameters
    ----------
    potential_3d
        ``(..., z, y, x)`` Coulomb potential in volts, cubic voxels of ``pixel_size_A``.
    pixel_size_A
        Voxel size in Å.
    slice_thickness_A
        Slice thickness in Å, a whole multiple of ``pixel_size_A``.
    voltage_kV
        Accelerating voltage in kV (must equal ``ctf_params.voltage_kV`` when both are given).
    ctf_params
        Optional :class:`cryolab.ctf.CTFParams`. If given, its Q0 makes the potential complex
        and the returned wave is the wave in the image plane, ``IFFT(FFT(ψ_exit) · T)``;
        ``|·|²`` is the image intensity. If None, the specimen is a pure phase object and the
        exit wave is returned.
    bandlimit_fraction
        Band limit as a fraction of Nyquist, or None for none.

    Returns
    -------
    complex tensor ``(..., y, x)`` (complex64, or complex128 for double input; the wave is
    carried in complex128 throughout). Without absorption, ``mean |ψ|²`` stays 1 up to what the
    band limit removes (Kirkland's check that the sampling is fine enough).

    Notes
    -----
    Cost: four 2D FFTs per slice (band-limiting ``t_n`` takes two, propagation two).
    """
    double = _is_double(potential_3d)
    pot = _real_input(potential_3d, "potential_3d", 3)
    pixel_size_A = _positive(pixel_size_A, "pixel_size_A")
    slice_thickness_A = _positive(slice_thickness_A, "slice_thickness_A")
    _check_voltage_matches(voltage_kV, ctf_params)
    voltage_kV = _single_voltage_kV(voltage_kV)
    planes = round(slice_thickness_A / pixel_size_A)
    if planes < 1 or abs(planes * pixel_size_A - slice_thickness_A) > 1e-6 * slice_thickness_A:
        raise InputError(f"slice_thickness_A={slice_thickness_A} must be a whole multiple of "
                         f"pixel_size_A={pixel_size_A}")
    nz, shape = pot.shape[-3], tuple(pot.shape[-2:])
    complex_dtype = torch.complex128  # phases accumulate over many slices: keep them exact
    sigma = float(_interaction_constant(voltage_kV))
    factor = _scattering_factor(ctf_params)
    mask = _bandlimit_mask(shape, pixel_size_A, bandlimit_fraction, device=pot.device)
    propagators: dict[float, torch.Tensor] = {}

    def step(wave: torch.Tensor, distance: float) -> torch.Tensor:
        if distance == 0:
            return wave
        if distance not in propagators:
            propagators[distance] = _fresnel_propagator(shape, pixel_size_A, distance, voltage_kV,
                                                        bandlimit_fraction, pot.device)
        return _ifft2(_fft2(wave) * propagators[distance])

    wave = torch.ones(pot.shape[:-3] + shape, dtype=complex_dtype, device=pot.device)
    z_previous = None
    for start, stop in _slice_bounds(nz, planes):
        z_mid = pixel_size_A * (0.5 * (start + stop - 1) - nz // 2)
        if z_previous is not None:
            wave = step(wave, z_mid - z_previous)
        vz = pot[..., start:stop, :, :].sum(-3) * pixel_size_A
        transmission = _apply_bandlimit(torch.exp(_specimen_exponent(vz, sigma, factor)), mask)
        wave = wave * transmission
        z_previous = z_mid
    wave = step(wave, 0.0 - z_previous)
    if ctf_params is not None:
        t = _lens_transfer(shape, pixel_size_A, ctf_params, unscattered_beam=True, device=pot.device)
        wave = _ifft2(_fft2(wave) * t)
    return wave.to(_dtypes(double)[1])


def multislice_image(potential_3d, ctf_params, pixel_size_A: float, slice_thickness_A: float, *,
                     bandlimit_fraction: float | None = _KIRKLAND_BANDLIMIT) -> torch.Tensor:
    """Image contrast ``(1 − |ψ_image|²) / 2`` of a thick specimen by :func:`multislice`.

    Same conventions as :func:`projection_approximation_image` (protein white, Q0 in the
    specimen), which it approaches for a thin specimen; the voltage comes from ``ctf_params``.

    Parameters
    ----------
    potential_3d
        ``(..., z, y, x)`` Coulomb potential in volts.
    ctf_params
        :class:`cryolab.ctf.CTFParams`.
    pixel_size_A, slice_thickness_A, bandlimit_fraction
        As for :func:`multislice`.

    Returns
    -------
    real tensor ``(..., y, x)``: contrast, float32 (float64 for double input).
    """
    wave = multislice(potential_3d, pixel_size_A, slice_thickness_A, ctf_params.voltage_kV,
                      ctf_params=ctf_params, bandlimit_fraction=bandlimit_fraction)
    return contrast_from_intensity(wave.abs() ** 2)
