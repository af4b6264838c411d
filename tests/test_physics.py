"""Tests of cryolab.physics: wave-optical image formation against the CTF and textbook invariants.

Specimens are analytic Gaussian blobs (exact 3D maps and projections) and, for one thin/thick
comparison, adenylate kinase from cryolab.atoms. Sign conventions are pinned against
cryolab.ctf.ctf_2d (docs/conventions.md: CTF = sin χ, positive defocus = underfocus, protein
white).
"""

import math

import numpy as np
import pytest
import torch

from cryolab import physics
from cryolab.ctf import CTFParams, ctf_2d, electron_wavelength_A
from cryolab.errors import InputError

PIXEL_A = 2.5
BOX = 64


def _axis_A(n: int, pixel_size_A: float) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float64) - n // 2) * pixel_size_A


def gaussian_blobs_3d(centers_xyz_A, sigma_A, amplitude_V, *, box=BOX, nz=BOX, pixel_size_A=PIXEL_A):
    """Potential (V) of isotropic Gaussian blobs on a (nz, box, box) grid, float64."""
    z, yx = _axis_A(nz, pixel_size_A), _axis_A(box, pixel_size_A)
    volume = torch.zeros(nz, box, box, dtype=torch.float64)
    for cx, cy, cz in centers_xyz_A:
        g = [torch.exp(-((axis - c) ** 2) / (2 * sigma_A**2)) for axis, c in ((z, cz), (yx, cy), (yx, cx))]
        volume += amplitude_V * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return volume


def gaussian_blobs_projected(centers_xy_A, sigma_A, amplitude_V, *, box=BOX, pixel_size_A=PIXEL_A):
    """Exact projection (V·Å) of the blobs of :func:`gaussian_blobs_3d` along z, float64."""
    yx = _axis_A(box, pixel_size_A)
    image = torch.zeros(box, box, dtype=torch.float64)
    for cx, cy in centers_xy_A:
        gy = torch.exp(-((yx - cy) ** 2) / (2 * sigma_A**2))
        gx = torch.exp(-((yx - cx) ** 2) / (2 * sigma_A**2))
        image += amplitude_V * sigma_A * math.sqrt(2 * math.pi) * gy[:, None] * gx[None, :]
    return image


def ctf_applied(image, params, pixel_size_A):
    """``irfft2(ctf_2d · rfft2(image))`` in float64: the CTF pipeline of cryolab.ctf."""
    ctf = ctf_2d(params.to(torch.float64), image.shape[-2:], pixel_size_A, rfft=True)
    return torch.fft.irfft2(torch.fft.rfft2(image) * ctf, s=image.shape[-2:])


def rel_l2(a, b) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def random_wave(shape=(BOX, BOX), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                         torch.randn(shape, generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def specimen_2d():
    """A few blobs (σ = 6 Å) projected: a smooth particle-like projected potential, V·Å."""
    centers = [(0.0, 0.0), (14.0, -9.0), (-12.0, 11.0), (5.0, 20.0)]
    return gaussian_blobs_projected(centers, 6.0, 1.0)


# ------------------------------------------------------------------------------------------
# constants


@pytest.mark.parametrize("voltage_kV, kirkland", [(100, 9.24e-4), (200, 7.29e-4), (300, 6.53e-4)])
def test_interaction_constant_matches_kirkland(voltage_kV, kirkland):
    # Kirkland (2020) quotes σ ≈ 0.000924, 0.000729, 0.000653 rad/(V·Å) at 100, 200, 300 kV
    assert float(physics.interaction_constant_per_V_A(voltage_kV)) == pytest.approx(kirkland, rel=2e-3)


def test_interaction_constant_from_si_constants_and_ctf_wavelength():
    # σ = 2π m e λ / h² with the relativistic mass m = γ m0, λ from cryolab.ctf
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    for kv in (80.0, 120.0, 200.0, 300.0):
        lam_m = float(electron_wavelength_A(torch.tensor(kv, dtype=torch.float64))) * 1e-10
        gamma = 1 + e * kv * 1e3 / (m0 * c**2)
        sigma_si = 2 * math.pi * gamma * m0 * e * lam_m / h**2  # rad / (V·m)
        # 2e-5: RELION's rounded wavelength constants (docs/conventions.md) against CODATA 2018
        assert float(physics.interaction_constant_per_V_A(kv)) == pytest.approx(sigma_si * 1e-10, rel=2e-5)


def test_propagator_uses_the_ctf_wavelength():
    shape, dz = (32, 48), 1234.0
    p = physics.fresnel_propagator(shape, 1.3, dz, 200.0).to(torch.complex128)
    k2 = (1 / (48 * 1.3)) ** 2  # first non-zero kx
    lam = -torch.angle(p[0, 1]).item() / (math.pi * dz * k2)
    assert lam == pytest.approx(float(electron_wavelength_A(torch.tensor(200.0, dtype=torch.float64))), rel=1e-5)


# ------------------------------------------------------------------------------------------
# transmission function


def test_transmission_function_phase_amplitude_and_weak_phase_limit(specimen_2d):
    sigma = float(physics.interaction_constant_per_V_A(300.0))
    t = physics.transmission_function(specimen_2d, 300.0)
    assert t.dtype == torch.complex128
    torch.testing.assert_close(t.abs(), torch.ones_like(specimen_2d), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.angle(t), sigma * specimen_2d, atol=0, rtol=1e-6)
    absorbing = physics.transmission_function(specimen_2d, 300.0, absorption=0.1)
    torch.testing.assert_close(absorbing.abs(), torch.exp(-0.1 * sigma * specimen_2d), atol=0, rtol=1e-6)
    weak = physics.transmission_function(specimen_2d, 300.0, weak_phase=True)
    expected_weak = torch.complex(torch.ones_like(specimen_2d), sigma * specimen_2d)
    torch.testing.assert_close(weak, expected_weak, atol=0, rtol=1e-6)
    # exp and its first-order expansion differ by ~ (σV)²/2
    assert float((t - weak).abs().max()) == pytest.approx(float((sigma * specimen_2d).max()) ** 2 / 2, rel=0.05)
    # float32 in, complex64 out (docs/conventions.md)
    assert physics.transmission_function(specimen_2d.float(), 300.0).dtype == torch.complex64


# ------------------------------------------------------------------------------------------
# Fresnel propagation


def test_propagator_is_unitary_and_norm_preserving():
    p = physics.fresnel_propagator((BOX, BOX + 6), PIXEL_A, 5000.0, 300.0)
    torch.testing.assert_close(p.abs(), torch.ones_like(p.abs()))
    psi = random_wave((BOX, BOX + 6))
    out = physics.propagate(psi, PIXEL_A, 5000.0, 300.0)
    assert float(torch.linalg.norm(out)) == pytest.approx(float(torch.linalg.norm(psi)), rel=1e-12)


def test_propagation_composes_and_zero_is_identity():
    psi = random_wave()
    d1, d2 = 3000.0, -1250.0
    two_steps = physics.propagate(physics.propagate(psi, PIXEL_A, d1, 300.0), PIXEL_A, d2, 300.0)
    one_step = physics.propagate(psi, PIXEL_A, d1 + d2, 300.0)
    torch.testing.assert_close(two_steps, one_step, atol=1e-12, rtol=0)
    torch.testing.assert_close(physics.propagate(psi, PIXEL_A, 0.0, 300.0), psi, atol=1e-12, rtol=0)
    back = physics.propagate(physics.propagate(psi, PIXEL_A, d1, 300.0), PIXEL_A, -d1, 300.0)
    torch.testing.assert_close(back, psi, atol=1e-12, rtol=0)


def test_propagation_broadcasts_over_distances():
    psi = random_wave()
    distances = torch.tensor([0.0, 800.0, -2000.0], dtype=torch.float64)
    batch = physics.propagate(psi, PIXEL_A, distances, 300.0)
    assert batch.shape == (3, BOX, BOX)
    for i, d in enumerate(distances.tolist()):
        torch.testing.assert_close(batch[i], physics.propagate(psi, PIXEL_A, d, 300.0))


def test_bandlimited_propagator_is_a_disc_of_two_thirds_nyquist():
    p = physics.fresnel_propagator((BOX, BOX), PIXEL_A, 100.0, 300.0, bandlimit_fraction=2 / 3)
    k = torch.fft.fftfreq(BOX, d=PIXEL_A, dtype=torch.float64)
    k_abs = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    k_max = (2 / 3) / (2 * PIXEL_A)
    assert bool(torch.all(p[k_abs > k_max * 1.0001] == 0))
    assert bool(torch.all(p[k_abs < k_max * 0.9999].abs() > 0.999))


def test_positive_phase_object_focuses_downstream():
    # a positive potential advances the phase and acts as a converging lens: propagating the
    # exit wave downstream (overfocus) makes the particle bright, upstream (underfocus) dark
    blob = gaussian_blobs_projected([(0.0, 0.0)], 8.0, 1.0)
    t = physics.transmission_function(blob, 300.0)
    centre = (BOX // 2, BOX // 2)
    downstream = physics.propagate(t, PIXEL_A, 5000.0, 300.0).abs() ** 2
    upstream = physics.propagate(t, PIXEL_A, -5000.0, 300.0).abs() ** 2
    assert float(downstream[centre]) > 1 > float(upstream[centre])


# ------------------------------------------------------------------------------------------
# objective lens and the CTF


def test_underfocus_equals_propagation_upstream():
    # T(k) = exp(+iχ): its defocus part is the propagator P(−Δf)
    psi = random_wave()
    defocus = 12000.0
    params = CTFParams(defocus, defocus, 0.0, cs_mm=0.0, amplitude_contrast=0.0)
    t = physics.objective_lens_transfer((BOX, BOX), PIXEL_A, params).to(torch.complex128)
    p = physics.fresnel_propagator((BOX, BOX), PIXEL_A, -defocus, 300.0).to(torch.complex128)
    torch.testing.assert_close(t, p, atol=1e-6, rtol=0)
    intensity = physics.image_intensity_from_exit_wave(psi, params, PIXEL_A)
    torch.testing.assert_close(intensity, physics.propagate(psi, PIXEL_A, -defocus, 300.0).abs() ** 2,
                               atol=1e-5, rtol=1e-5)


def test_objective_lens_phase_is_the_ctf_phase_without_amplitude_contrast():
    params = CTFParams(18000.0, 15000.0, 37.0, voltage_kV=200.0, cs_mm=2.0, amplitude_contrast=0.2,
                       phase_shift_deg=30.0)
    t = physics.objective_lens_transfer((BOX, BOX + 1), PIXEL_A, params).to(torch.complex128)
    ctf_no_q0 = ctf_2d(CTFParams(18000.0, 15000.0, 37.0, voltage_kV=200.0, cs_mm=2.0, amplitude_contrast=0.0,
                                 phase_shift_deg=30.0), (BOX, BOX + 1), PIXEL_A, rfft=False)
    # sin χ = Im T away from the unscattered beam, which passes unchanged
    torch.testing.assert_close(t.imag.flatten()[1:], ctf_no_q0.double().flatten()[1:], atol=2e-6, rtol=0)
    assert complex(t[0, 0]) == 1


@pytest.mark.parametrize("params", [
    CTFParams(15000.0, 15000.0, 0.0),
    CTFParams(22000.0, 17000.0, 63.0, voltage_kV=200.0, cs_mm=1.4, amplitude_contrast=0.07),
    CTFParams(9000.0, 8000.0, -20.0, amplitude_contrast=0.3, bfactor_A2=150.0, scale=0.8),
    CTFParams(torch.tensor([6000.0, 25000.0]), torch.tensor([5500.0, 24000.0]), 10.0, cs_mm=0.01),
])
def test_weak_phase_image_equals_ctf_applied_to_projected_potential(specimen_2d, params):
    sigma = float(physics.interaction_constant_per_V_A(params.voltage_kV.flatten()[0]))
    linear = physics.weak_phase_image(specimen_2d, params, PIXEL_A)
    expected = ctf_applied(sigma * specimen_2d, params, PIXEL_A)
    assert linear.shape == expected.shape
    assert rel_l2(linear, expected) < 1e-6


def test_phase_plate_image_matches_ctf_and_full_image_up_to_the_mean(specimen_2d):
    params = CTFParams(3000.0, 3000.0, 0.0, phase_shift_deg=90.0)
    sigma = float(physics.interaction_constant_per_V_A(300.0))
    linear = physics.weak_phase_image(specimen_2d, params, PIXEL_A)
    expected = ctf_applied(sigma * specimen_2d, params, PIXEL_A)
    assert rel_l2(linear, expected) < 1e-6
    # the full image cannot tell the mean potential (a uniform, invisible phase) from the
    # unscattered beam: it agrees with linear theory except for the mean
    weak = specimen_2d * 1e-3
    full = physics.projection_approximation_image(weak, params, PIXEL_A)
    linear = physics.weak_phase_image(weak, params, PIXEL_A)
    assert rel_l2(full - full.mean(), linear - linear.mean()) < 1e-3
    # ... whose contrast is the amplitude part σ Q0 V̄ only, not σ sin(φ + arcsin Q0) V̄
    mean_phase = sigma * float(weak.mean())
    assert float(full.mean()) == pytest.approx(0.1 * mean_phase, rel=1e-3)
    assert float(linear.mean()) == pytest.approx(math.sin(math.pi / 2 + math.asin(0.1)) * mean_phase, rel=1e-6)


def test_full_image_of_a_weak_phase_object_equals_the_ctf_pipeline(specimen_2d):
    # |IFFT(FFT(exp(iσV(√(1−Q0²) + iQ0))) · T)|² to all orders, against ctf_2d applied to σ V_z:
    # this pins every sign (propagator, lens, amplitude contrast, protein white)
    params = CTFParams(16000.0, 14000.0, 25.0, amplitude_contrast=0.1)
    sigma = float(physics.interaction_constant_per_V_A(300.0))
    weak = specimen_2d * (1e-4 / float(sigma * specimen_2d.max()))  # peak phase 1e-4 rad
    image = physics.projection_approximation_image(weak, params, PIXEL_A)
    assert image.dtype == torch.float64
    assert rel_l2(image, ctf_applied(sigma * weak, params, PIXEL_A)) < 1e-3


def test_strong_phase_object_departs_from_linear_theory(specimen_2d):
    params = CTFParams(15000.0, 15000.0, 0.0, amplitude_contrast=0.07)
    sigma = float(physics.interaction_constant_per_V_A(300.0))
    errors = []
    for peak_phase in (1e-3, 1e-2, 0.1, 0.5, 1.0):
        vz = specimen_2d * (peak_phase / float(sigma * specimen_2d.max()))
        errors.append(rel_l2(physics.projection_approximation_image(vz, params, PIXEL_A),
                             physics.weak_phase_image(vz, params, PIXEL_A)))
    assert errors[0] < 2e-3
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert errors[3] > 0.05 and errors[4] > 0.1, errors
    # the departure is second order: ~ proportional to the phase while it is small
    assert errors[2] / errors[1] == pytest.approx(10, rel=0.3)


def test_underfocus_makes_a_positive_potential_white():
    blob = gaussian_blobs_projected([(0.0, 0.0)], 15.0, 1.0)
    centre = (BOX // 2, BOX // 2)
    for q0 in (0.0, 0.1):
        under = CTFParams(20000.0, 20000.0, 0.0, amplitude_contrast=q0)
        contrast = physics.projection_approximation_image(blob, under, PIXEL_A)
        assert float(contrast[centre]) > 0
        # raw micrograph sign: the particle is dark in the recorded intensity
        t = physics.transmission_function(blob * math.sqrt(1 - q0**2), 300.0, absorption=q0 / math.sqrt(1 - q0**2))
        assert float(physics.image_intensity_from_exit_wave(t, under, PIXEL_A)[centre]) < 1
    over = CTFParams(-20000.0, -20000.0, 0.0, amplitude_contrast=0.0)
    assert float(physics.projection_approximation_image(blob, over, PIXEL_A)[centre]) < 0
    # low-pass filtered contrast (k below the first CTF zero) is positive and peaks on the particle
    image = physics.weak_phase_image(blob, CTFParams(20000.0, 20000.0, 0.0), PIXEL_A)
    k = torch.fft.fftfreq(BOX, d=PIXEL_A, dtype=torch.float64)
    low = (k[:, None] ** 2 + k[None, :] ** 2) < (1 / 90.0) ** 2
    lowpass = torch.fft.ifft2(torch.fft.fft2(image) * low).real
    assert float(lowpass[centre]) > 0 and int(lowpass.argmax()) == centre[0] * BOX + centre[1]


# ------------------------------------------------------------------------------------------
# multislice


def _random_stack(thickness_A, n_blobs=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n_blobs, 2, generator=g, dtype=torch.float64) - 0.5) * 100
    zs = torch.linspace(-thickness_A / 2, thickness_A / 2, n_blobs, dtype=torch.float64)
    nz = int(round(thickness_A / PIXEL_A)) + 16
    nz += 1 - nz % 2  # odd: the reference plane is the stack's middle plane
    centers = [(float(x), float(y), float(z)) for (x, y), z in zip(xy, zs)]
    return gaussian_blobs_3d(centers, 5.0, 2.0, nz=nz)


def _multislice_vs_projection(volume, params, slice_A):
    ms = physics.multislice_image(volume, params, PIXEL_A, slice_A)
    pa = physics.projection_approximation_image(volume.sum(-3) * PIXEL_A, params, PIXEL_A, bandlimit_fraction=2 / 3)
    return rel_l2(ms, pa)


def test_multislice_single_slice_is_the_projection_approximation():
    volume = _random_stack(60.0)
    params = CTFParams(15000.0, 13000.0, 40.0)
    ms = physics.multislice_image(volume, params, PIXEL_A, volume.shape[-3] * PIXEL_A)
    pa = physics.projection_approximation_image(volume.sum(-3) * PIXEL_A, params, PIXEL_A, bandlimit_fraction=2 / 3)
    torch.testing.assert_close(ms, pa, atol=1e-12, rtol=0)


def test_multislice_of_vacuum_is_a_plane_wave():
    wave = physics.multislice(torch.zeros(9, 32, 32), PIXEL_A, 3 * PIXEL_A, 300.0)
    assert wave.dtype == torch.complex64
    torch.testing.assert_close(wave, torch.ones(32, 32, dtype=torch.complex64))


def test_multislice_thin_specimen_equals_projection_approximation():
    # 4 nm of blobs, σV_z ≲ 0.03 rad: Fresnel propagation inside the specimen is negligible
    params = CTFParams(15000.0, 15000.0, 0.0, amplitude_contrast=0.07)
    assert _multislice_vs_projection(_random_stack(40.0), params, PIXEL_A) < 2e-3


def test_multislice_thick_specimen_differs_more_with_thickness():
    # 10 blobs spread over 20, 100, 400 nm: each sits at a different defocus, which the
    # projection approximation ignores
    params = CTFParams(15000.0, 15000.0, 0.0, amplitude_contrast=0.07)
    differences = [_multislice_vs_projection(_random_stack(t), params, 8 * PIXEL_A) for t in (200.0, 1000.0, 4000.0)]
    assert all(a < b for a, b in zip(differences, differences[1:])), differences
    assert differences[0] > 2e-3 and differences[-1] > 0.05, differences


def test_blob_offset_along_the_beam_acts_as_defocus():
    # the beam travels towards +z: a blob d Å downstream of the reference plane is d Å further
    # from the (upstream) plane an underfocused lens images, i.e. it is underfocused by Δf + d
    d, defocus = 400.0, 12000.0
    volume = gaussian_blobs_3d([(0.0, 0.0, d)], 6.0, 2.0, nz=401)
    projected = volume.sum(-3) * PIXEL_A
    ms = physics.multislice_image(volume, CTFParams(defocus, defocus, 0.0), PIXEL_A, 5 * PIXEL_A)
    shifted = physics.projection_approximation_image(projected, CTFParams(defocus + d, defocus + d, 0.0), PIXEL_A,
                                                     bandlimit_fraction=2 / 3)
    unshifted = physics.projection_approximation_image(projected, CTFParams(defocus, defocus, 0.0), PIXEL_A,
                                                       bandlimit_fraction=2 / 3)
    assert rel_l2(ms, shifted) < 5e-3 < rel_l2(ms, unshifted)


def test_multislice_conserves_intensity_without_absorption():
    volume = _random_stack(2000.0)
    wave = physics.multislice(volume, PIXEL_A, 4 * PIXEL_A, 300.0)
    assert float((wave.abs() ** 2).mean()) == pytest.approx(1.0, abs=1e-6)
    # unitary propagation: the objective lens keeps the mean intensity too
    image_wave = physics.multislice(volume, PIXEL_A, 4 * PIXEL_A, 300.0,
                                    ctf_params=CTFParams(15000.0, 15000.0, 0.0, amplitude_contrast=0.0))
    assert float((image_wave.abs() ** 2).mean()) == pytest.approx(float((wave.abs() ** 2).mean()), abs=1e-9)
    # amplitude contrast is absorption: the mean intensity drops
    absorbed = physics.multislice(volume, PIXEL_A, 4 * PIXEL_A, 300.0, ctf_params=CTFParams(15000.0, 15000.0, 0.0))
    assert float((absorbed.abs() ** 2).mean()) < 1 - 1e-4


def test_multislice_converges_as_slices_thin():
    volume = _random_stack(1000.0)
    params = CTFParams(15000.0, 15000.0, 0.0)
    images = {s: physics.multislice_image(volume, params, PIXEL_A, s * PIXEL_A) for s in (1, 4, 16)}
    assert rel_l2(images[4], images[1]) < rel_l2(images[16], images[1]) < 0.05


def test_multislice_of_adenylate_kinase():
    # a real protein: thin (one 13 nm box) it matches the projection approximation to < 1 %,
    # stacked 8 times along the beam (104 nm, laterally shifted copies) it does not
    atoms = pytest.importorskip("cryolab.atoms")
    pixel = 2.0
    volume = atoms.atoms_to_potential(atoms.builtin_model("adk_open"), 64, pixel).double()
    params = CTFParams(15000.0, 15000.0, 0.0, amplitude_contrast=0.07)

    def difference(v):
        ms = physics.multislice_image(v, params, pixel, 4 * pixel)
        pa = physics.projection_approximation_image(v.sum(-3) * pixel, params, pixel, bandlimit_fraction=2 / 3)
        return rel_l2(ms, pa)

    thin = difference(volume)
    stack = torch.cat([torch.roll(volume, (7 * i % 23 - 11, 5 * i % 19 - 9), dims=(-2, -1)) for i in range(8)])
    thick = difference(stack)
    assert thin < 1e-2 < thick


def test_multislice_rejects_bad_input():
    volume = torch.zeros(8, 16, 16)
    with pytest.raises(InputError, match="whole multiple"):
        physics.multislice(volume, 2.0, 3.0, 300.0)
    with pytest.raises(InputError, match="disagrees"):
        physics.multislice(volume, 2.0, 4.0, 200.0, ctf_params=CTFParams(1e4, 1e4, 0.0))
    with pytest.raises(InputError, match="bandlimit_fraction"):
        physics.fresnel_propagator((16, 16), 2.0, 10.0, 300.0, bandlimit_fraction=1.5)
    with pytest.raises(InputError):
        physics.transmission_function(np.zeros(16), 300.0)


def test_accepts_numpy_and_returns_float32(specimen_2d):
    params = CTFParams(15000.0, 15000.0, 0.0)
    image = physics.weak_phase_image(specimen_2d.numpy(), params, PIXEL_A)
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    assert physics.multislice_image(np.zeros((3, 16, 16)), params, PIXEL_A, PIXEL_A).dtype == torch.float32


def test_images_broadcast_over_a_batch_of_ctf_parameters():
    volume = _random_stack(40.0)
    defoci = torch.tensor([8000.0, 20000.0])
    batch = CTFParams(defoci, defoci, 0.0)
    images = physics.multislice_image(volume, batch, PIXEL_A, 4 * PIXEL_A)
    assert images.shape == (2, BOX, BOX)
    for i, d in enumerate(defoci.tolist()):
        single = physics.multislice_image(volume, CTFParams(d, d, 0.0), PIXEL_A, 4 * PIXEL_A)
        torch.testing.assert_close(images[i], single)
