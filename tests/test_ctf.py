"""Tests for cryolab.ctf: agreement with RELION 3.1.3 (stored fixture), analytic results, invariants."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryolab.ctf import (
    CTFParams,
    chromatic_focal_spread_A,
    ctf_1d,
    ctf_2d,
    ctf_phase_chi,
    electron_wavelength_A,
    phase_flip,
    spatial_coherence_envelope,
    temporal_coherence_envelope,
    wiener_filter,
)
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid

REFERENCE = Path(__file__).parent / "data" / "ctf_relion_reference.npz"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL_RELION = 1e-5

ASTIGMATIC = CTFParams(defocus_u_A=15000.0, defocus_v_A=11000.0, defocus_angle_deg=25.0)


@pytest.fixture(scope="module")
def relion():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def _params(table: np.ndarray, columns: np.ndarray) -> CTFParams:
    return CTFParams.from_table(pd.DataFrame(table, columns=list(columns)))


# ---------------------------------------------------------------------------------------------
# Agreement with RELION 3.1.3 (tests/data/ctf_relion_reference.md)
# ---------------------------------------------------------------------------------------------


def test_fixture_provenance(relion):
    prov = json.loads(str(relion["provenance"]))
    assert "3.1.3" in prov["relion"]
    assert any(c.startswith("relion_project") and "--ctf" in c for c in prov["commands"])


@pytest.mark.parametrize("box", [64, 65])
def test_matches_relion_project(relion, box):
    """relion_project --ctf: all four particles (B-factor and scale included) inside Nyquist."""
    params = _params(relion["params"], relion["columns"])
    ours = ctf_2d(params, (box, box), float(relion[f"pixel_size_{box}"])).numpy()
    ref = relion[f"project_{box}"]
    inside = np.isfinite(ref)
    assert ours.shape == ref.shape == (4, box, box // 2 + 1)
    assert inside.sum() > 0.75 * inside.size
    assert np.abs(ours - ref)[inside].max() < TOL_RELION


@pytest.mark.parametrize("box", [64, 65])
def test_matches_relion_ctf_toolbox_whole_grid(relion, box):
    """relion_ctf_toolbox pre-multiplication: the whole rfft grid, corners included.

    That program applies rlnCtfScalefactor but not rlnCtfBfactor. For even boxes its Nyquist row
    is ky = +0.5 (ours −0.5, as fftfreq) and its Nyquist column went through a real image, which
    keeps only the Hermitian part; both relations are checked exactly.
    """
    params = dataclasses.replace(_params(relion["params"], relion["columns"]), bfactor_A2=0.0)
    apix = float(relion[f"pixel_size_{box}"])
    ours = ctf_2d(params, (box, box), apix).numpy()
    ref = relion[f"premultiply_{box}"]
    if box % 2:
        assert np.abs(ours - ref).max() < TOL_RELION
        return
    ny = box // 2
    rows = np.arange(box) != ny
    assert np.abs(ours - ref)[:, rows, :ny].max() < TOL_RELION
    full = ctf_2d(params, (box, box), apix, rfft=False).numpy()
    # RELION's row ny is CTF(kx, +0.5) = CTF(-kx, -0.5): our full grid at column -kx.
    cols = np.arange(ny + 1)
    assert np.abs(ref[:, ny, :] - full[:, ny, (-cols) % box]).max() < TOL_RELION
    # Column kx = +0.5 holds (CTF(0.5, ky) + CTF(0.5, -ky)) / 2.
    i = np.arange(box)
    hermitian = 0.5 * (full[:, i, ny] + full[:, (-i) % box, ny])
    assert np.abs(ref[:, rows, ny] - hermitian[:, rows]).max() < TOL_RELION


@pytest.mark.parametrize("box", [64, 65])
def test_matches_relion_centered_image(relion, box):
    """relion_ctf_toolbox --simulate writes the centred full CTF: centre N//2, ky = -0.5 first."""
    params = _params(relion[f"simulate_params_{box}"], relion["columns"])
    apix = float(relion[f"simulate_pixel_size_{box}"])
    ours = ctf_2d(params, (box, box), apix, rfft=False, fftshift=True).numpy()
    assert np.abs(ours - relion[f"simulate_{box}"]).max() < TOL_RELION


def test_relion_columns_round_trip(relion):
    params = _params(relion["params"], relion["columns"])
    assert params.batch_shape == (4,)
    cols = params.to_columns()
    assert list(cols) == list(relion["columns"])
    np.testing.assert_allclose(np.stack(list(cols.values()), axis=1), relion["params"], rtol=1e-7)


# ---------------------------------------------------------------------------------------------
# Wavelength and analytic properties
# ---------------------------------------------------------------------------------------------


def test_electron_wavelength():
    assert abs(float(electron_wavelength_A(300.0)) - 0.019687) < 1e-6
    lam = electron_wavelength_A([100.0, 200.0, 300.0])
    assert lam.dtype == torch.float32 and lam.shape == (3,)
    np.testing.assert_allclose(lam.numpy(), [0.037014, 0.025079, 0.019687], atol=1e-6)
    assert electron_wavelength_A(torch.tensor(300.0, dtype=torch.float64)).dtype == torch.float64


def test_ctf_at_zero_frequency_is_q0():
    params = CTFParams(defocus_u_A=torch.tensor([5000.0, 20000.0]), defocus_v_A=4000.0,
                       defocus_angle_deg=10.0, amplitude_contrast=torch.tensor([0.07, 0.1]))
    for shape in [(32, 32), (33, 31)]:
        ctf = ctf_2d(params, shape, 1.2)
        np.testing.assert_allclose(ctf[:, 0, 0].numpy(), [0.07, 0.1], atol=1e-7)
        centred = ctf_2d(params, shape, 1.2, rfft=False, fftshift=True)
        np.testing.assert_allclose(centred[:, shape[0] // 2, shape[1] // 2].numpy(), [0.07, 0.1],
                                   atol=1e-7)
    shifted = dataclasses.replace(params, phase_shift_deg=90.0)  # sin(π/2 + asin Q0) = sqrt(1-Q0²)
    np.testing.assert_allclose(ctf_1d(shifted, 0.0).numpy(), np.sqrt(1 - np.array([0.07, 0.1]) ** 2),
                               atol=1e-7)


def test_low_frequency_positive_for_underfocus():
    ctf = ctf_1d(CTFParams(20000.0, 20000.0, 0.0), torch.linspace(0, 0.005, 20))
    assert torch.all(ctf > 0)


def test_zeros_where_chi_is_multiple_of_pi():
    """Non-astigmatic: χ(k) = nπ solves a quadratic in k²; the CTF vanishes there."""
    defocus, cs_mm, q0, kv = 12000.0, 2.7, 0.1, 300.0
    params = CTFParams(defocus, defocus, 0.0, voltage_kV=kv, cs_mm=cs_mm, amplitude_contrast=q0)
    lam = 12.2643247 / math.sqrt(kv * 1e3 * (1 + 0.978466e-6 * kv * 1e3))
    a, b = 0.5 * math.pi * cs_mm * 1e7 * lam**3, math.pi * lam * defocus
    zeros = []
    for n in range(1, 12):  # a u² − b u + (nπ − asin Q0) = 0, smaller root (before Scherzer turn)
        c = n * math.pi - math.asin(q0)
        u = (b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        zeros.append(math.sqrt(u))
    k = torch.tensor(zeros, dtype=torch.float64)
    values = ctf_1d(params, k)
    assert values.abs().max() < 1e-5
    np.testing.assert_allclose(ctf_phase_chi(params, torch.stack([k, 0 * k], -1)).numpy(),
                               np.arange(1, 12) * math.pi, rtol=1e-6)
    # between consecutive zeros the sign alternates
    mid = ctf_1d(params, 0.5 * (k[1:] + k[:-1]))
    assert torch.all(mid[1:] * mid[:-1] < 0)


def test_astigmatism_angle_plus_90_swaps_u_and_v():
    a = CTFParams(16000.0, 12000.0, 20.0, phase_shift_deg=15.0, bfactor_A2=40.0)
    b = CTFParams(12000.0, 16000.0, 110.0, phase_shift_deg=15.0, bfactor_A2=40.0)
    for shape in [(48, 48), (47, 45)]:
        torch.testing.assert_close(ctf_2d(a, shape, 1.3), ctf_2d(b, shape, 1.3), atol=1e-6, rtol=0)


def test_defocus_angle_measured_from_x_towards_y():
    """Along the U axis (θ = angle) the CTF equals the non-astigmatic CTF at defocus U."""
    def p(u, v, angle):  # float64 params give float64 results (χ ~ 100 rad here)
        return CTFParams(u, v, angle).to(torch.float64)

    params = p(18000.0, 9000.0, 30.0)
    angle = math.radians(30.0)
    k = torch.linspace(0.01, 0.3, 50, dtype=torch.float64)
    freq = torch.stack([k * math.cos(angle), k * math.sin(angle)], -1)
    along_u = torch.sin(ctf_phase_chi(params, freq))
    assert along_u.dtype == torch.float64
    torch.testing.assert_close(along_u, ctf_1d(p(18000.0, 18000.0, 0.0), k), atol=1e-9, rtol=0)
    torch.testing.assert_close(ctf_1d(params, k, azimuth_deg=30.0), along_u, atol=1e-9, rtol=0)
    torch.testing.assert_close(ctf_1d(params, k, azimuth_deg=120.0),
                               ctf_1d(p(9000.0, 9000.0, 0.0), k), atol=1e-9, rtol=0)
    torch.testing.assert_close(ctf_1d(params, k), ctf_1d(p(13500.0, 13500.0, 0.0), k), atol=1e-9, rtol=0)
    # the 2D grid agrees: sample (kx, ky) = (0, k) lies at θ = 90°, 60° from the U axis
    grid = ctf_2d(params, (64, 64), 2.0, rfft=False)
    ky = torch.fft.fftfreq(64, d=2.0, dtype=torch.float64)[1:20]
    torch.testing.assert_close(grid[1:20, 0], ctf_1d(params, ky, azimuth_deg=90.0), atol=1e-9, rtol=0)


@pytest.mark.parametrize("shape", [(32, 32), (33, 33), (32, 27), (31, 40)])
def test_rfft_and_shifted_grids_are_consistent(shape):
    h, w = shape
    full = ctf_2d(ASTIGMATIC, shape, 1.1, rfft=False)
    half = ctf_2d(ASTIGMATIC, shape, 1.1)
    assert full.shape == shape and full.dtype == torch.float32 and half.shape == (h, w // 2 + 1)
    cols = w // 2 if w % 2 == 0 else w // 2 + 1
    torch.testing.assert_close(half[:, :cols], full[:, :cols], atol=0, rtol=0)
    if w % 2 == 0:
        # The even-width Nyquist column is kx = +0.5 in the rfft layout (rfftfreq, as RELION's
        # getFftwImage) and kx = -0.5 in the full layout (fftfreq): CTF(0.5, ky) = CTF(-0.5, -ky).
        # (Not at an even-height corner, which is (+0.5, -0.5) in one and (-0.5, -0.5) in the other.)
        rows = torch.arange(h)[torch.arange(h) != h // 2] if h % 2 == 0 else torch.arange(h)
        torch.testing.assert_close(half[rows, w // 2], full[(-rows) % h, w // 2], atol=0, rtol=0)
    centred = ctf_2d(ASTIGMATIC, shape, 1.1, rfft=False, fftshift=True)
    torch.testing.assert_close(centred, torch.fft.fftshift(full), atol=0, rtol=0)
    # point symmetry CTF(-k) = CTF(k) on the full grid (away from the even-size Nyquist edge)
    flipped = torch.roll(torch.flip(full, (0, 1)), shifts=(1, 1), dims=(0, 1))
    rows = slice(None) if h % 2 else torch.arange(h) != h // 2
    cols = slice(None) if w % 2 else torch.arange(w) != w // 2
    torch.testing.assert_close(full[rows][:, cols], flipped[rows][:, cols], atol=1e-6, rtol=0)


def test_phase_chi_matches_ctf_2d_on_the_grid():
    params = dataclasses.replace(ASTIGMATIC, phase_shift_deg=30.0)
    grid = fftfreq_grid((40, 40), rfft=True, pixel_size_A=1.5)
    chi = ctf_phase_chi(params, grid)
    torch.testing.assert_close(torch.sin(chi), ctf_2d(params, (40, 40), 1.5), atol=2e-5, rtol=0)


def test_bfactor_and_scale():
    base = CTFParams(10000.0, 9000.0, 40.0)
    damped = dataclasses.replace(base, bfactor_A2=80.0, scale=0.5)
    k2 = fftfreq_grid((36, 36), rfft=True, pixel_size_A=1.4).pow(2).sum(-1)
    expected = ctf_2d(base, (36, 36), 1.4) * torch.exp(-80.0 * k2 / 4) * 0.5
    torch.testing.assert_close(ctf_2d(damped, (36, 36), 1.4), expected, atol=1e-6, rtol=0)


def test_batched_params_broadcast():
    defocus = torch.tensor([[8000.0], [12000.0], [20000.0]])  # (3, 1)
    voltage = torch.tensor([200.0, 300.0])  # (2,)
    params = CTFParams(defocus, defocus - 1000.0, 30.0, voltage_kV=voltage)
    assert params.batch_shape == (3, 2)
    ctf = ctf_2d(params, (24, 25), 1.5)
    assert ctf.shape == (3, 2, 24, 13)
    for i in range(3):
        for j in range(2):
            single = CTFParams(float(defocus[i, 0]), float(defocus[i, 0]) - 1000.0, 30.0,
                               voltage_kV=float(voltage[j]))
            torch.testing.assert_close(ctf[i, j], ctf_2d(single, (24, 25), 1.5), atol=0, rtol=0)
            torch.testing.assert_close(params[i, j].defocus_u_A, defocus[i, 0])
    assert ctf_1d(params, torch.linspace(0, 0.3, 7)).shape == (3, 2, 7)
    assert ctf_phase_chi(params, torch.zeros(4, 5, 2)).shape == (3, 2, 4, 5)
    assert ctf_1d(params, torch.linspace(0, 0.3, 7), azimuth_deg=torch.tensor([0.0, 90.0])).shape == (3, 2, 7)


def test_ctf_2d_follows_the_formula_for_mixed_batch_shapes():
    """ctf_2d (χ as a product of per-particle coefficients and per-grid terms) against the formula
    of the module docstring evaluated directly in float64, with fields of different batch shapes
    (B-factor and scale per row, voltage per column)."""
    defocus = torch.tensor([[8000.0], [15000.0], [24000.0]])
    params = CTFParams(defocus + 400.0, defocus - 300.0, torch.tensor([[10.0], [95.0], [-40.0]]),
                       voltage_kV=torch.tensor([200.0, 300.0]), phase_shift_deg=20.0, amplitude_contrast=0.07,
                       bfactor_A2=torch.tensor([[0.0], [50.0], [120.0]]), scale=torch.tensor([[1.0], [0.8], [1.3]]))
    shape, px = (26, 25), 1.2
    k = fftfreq_grid(shape, rfft=True).double()
    kx = torch.round(k[..., 0] * shape[1]) / (shape[1] * px)
    ky = torch.round(k[..., 1] * shape[0]) / (shape[0] * px)
    expected = torch.empty(3, 2, *kx.shape, dtype=torch.float64)
    for i in range(3):
        for j in range(2):
            volts = float(params.voltage_kV[j]) * 1e3
            lam = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
            u, v = float(params.defocus_u_A[i, 0]), float(params.defocus_v_A[i, 0])
            theta = torch.atan2(ky, kx)
            dfocus = (u + v) / 2 + (u - v) / 2 * torch.cos(2 * (theta - math.radians(float(params.defocus_angle_deg[i, 0]))))
            k2 = kx * kx + ky * ky
            chi = (math.pi * lam * dfocus * k2 - math.pi / 2 * 2.7e7 * lam**3 * k2 * k2 + math.radians(20.0)
                   + math.asin(0.07))
            expected[i, j] = (torch.sin(chi) * torch.exp(-float(params.bfactor_A2[i, 0]) * k2 / 4)
                              * float(params.scale[i, 0]))
    ctf = ctf_2d(params, shape, px)
    assert ctf.shape == (3, 2, 26, 13) and ctf.dtype == torch.float32
    torch.testing.assert_close(ctf.double(), expected, atol=2e-6, rtol=0)


def test_params_fields_and_helpers():
    params = CTFParams(np.array([10000.0, 11000.0]), [9000.0, 10000.0], 5)
    assert all(isinstance(getattr(params, f.name), torch.Tensor) for f in dataclasses.fields(params))
    assert params.defocus_u_A.dtype == torch.float32 and params.dtype == torch.float32
    assert params.batch_shape == (2,)
    assert params[1].batch_shape == () and float(params[1].defocus_v_A) == 10000.0
    assert params.to("cpu").device.type == "cpu"
    assert params.to(torch.float64).dtype == torch.float64
    assert ctf_2d(params.to(torch.float64), (8, 8), 1.0).dtype == torch.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.scale = 2.0
    with pytest.raises(InputError, match="broadcast"):
        CTFParams(torch.zeros(3), torch.zeros(2), 0.0)


def test_gradients_flow_to_defocus():
    defocus = torch.tensor(15000.0, requires_grad=True)
    ctf_2d(CTFParams(defocus, defocus, 0.0), (16, 16), 2.0).sum().backward()
    assert defocus.grad is not None and torch.isfinite(defocus.grad)


def test_from_table_defaults_and_errors():
    table = pd.DataFrame({"rlnDefocusU": [12000.0, 15000.0], "rlnDefocusV": [11000.0, 14000.0],
                          "rlnDefocusAngle": [0.0, 45.0]})
    params = CTFParams.from_table(table)
    assert params.batch_shape == (2,)
    assert float(params.voltage_kV) == 300.0 and float(params.cs_mm) == pytest.approx(2.7)
    assert float(params.amplitude_contrast) == 0.0  # RELION 3.1 reads a missing Q0 as 0
    assert float(params.scale) == 1.0 and float(params.bfactor_A2) == 0.0
    assert CTFParams.from_table({c: table[c].to_numpy() for c in table}).batch_shape == (2,)
    for column in ["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]:
        with pytest.raises(InputError, match=column):
            CTFParams.from_table(table.drop(columns=column))
    with pytest.raises(InputError, match="rlnAmplitudeContrast"):
        CTFParams.from_table(table.assign(rlnAmplitudeContrast=1.5))
    with pytest.raises(InputError, match="rlnDefocusU"):
        CTFParams.from_table(table.assign(rlnDefocusU=[np.nan, 1.0]))


def test_bad_shapes_raise():
    with pytest.raises(InputError):
        ctf_2d(ASTIGMATIC, (8, 8, 8), 1.0)
    with pytest.raises(InputError):
        ctf_2d(ASTIGMATIC, (8, 8), 0.0)
    with pytest.raises(InputError):
        ctf_phase_chi(ASTIGMATIC, torch.zeros(5, 3))


# ---------------------------------------------------------------------------------------------
# Envelopes
# ---------------------------------------------------------------------------------------------


def test_spatial_coherence_envelope():
    lam = float(electron_wavelength_A(300.0))
    defocus, cs_A = 10000.0, 2.7e7
    k = torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64)
    env = spatial_coherence_envelope(k, defocus, illumination_semiangle_mrad=0.05)
    grad = defocus * lam * k - cs_A * lam**3 * k**3
    expected = torch.exp(-((math.pi * 0.05e-3 / lam) ** 2) * grad**2)
    torch.testing.assert_close(env, expected.float(), atol=1e-6, rtol=0)
    assert float(env[0]) == 1.0
    # underfocus balances Cs at k² = Δf / (Cs λ²): no damping there, damping on either side
    k_stationary = math.sqrt(defocus / (cs_A * lam**2))
    ks = torch.tensor([0.7, 1.0, 1.3]) * k_stationary
    env = spatial_coherence_envelope(ks, defocus, illumination_semiangle_mrad=0.1)
    assert float(env[1]) == pytest.approx(1.0, abs=1e-6) and env[0] < 1 and env[2] < 1
    # overfocus has no such point; a larger aperture damps more; broadcasting
    assert spatial_coherence_envelope(ks[1], -defocus, illumination_semiangle_mrad=0.1) < 0.99
    env = spatial_coherence_envelope(torch.linspace(0, 0.4, 9), torch.tensor([[5000.0], [20000.0]]),
                                     illumination_semiangle_mrad=torch.tensor([[0.02], [0.2]]))
    assert env.shape == (2, 9) and torch.all(env[1, 1:] <= env[0, 1:] + 1e-7)


def test_temporal_coherence_envelope():
    lam = float(electron_wavelength_A(300.0))
    k = torch.linspace(0, 0.5, 11)
    env = temporal_coherence_envelope(k, 30.0)
    expected = torch.exp(-0.5 * (math.pi * lam * 30.0 * k**2) ** 2)
    torch.testing.assert_close(env, expected, atol=1e-6, rtol=0)
    assert float(env[0]) == 1.0 and torch.all(env[1:] < env[:-1])
    # δ = Cc ΔE/E: Cc 2.7 mm, σ_E 0.3 eV at 300 kV -> 27 Å
    assert float(chromatic_focal_spread_A(2.7, 0.3, voltage_kV=300.0)) == pytest.approx(27.0, rel=1e-6)
    d = chromatic_focal_spread_A(2.7, 0.0, lens_current_instability=1e-7, voltage_instability=2e-7)
    assert float(d) == pytest.approx(2.7e7 * math.sqrt(4e-14 + 4e-14), rel=1e-6)
    # FWHM form: exp(-(π λ Δ k²)² / (16 ln 2)) with Δ = 2 sqrt(2 ln 2) δ
    fwhm = 2 * math.sqrt(2 * math.log(2)) * 30.0
    torch.testing.assert_close(env, torch.exp(-((math.pi * lam * fwhm * k**2) ** 2) / (16 * math.log(2))),
                               atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Image operations
# ---------------------------------------------------------------------------------------------


def _test_images(n: int, h: int, w: int) -> torch.Tensor:
    """White noise without the even-size Nyquist row/column, which a real image can only hold
    Hermitian-symmetrised; there a non-symmetric filter does not compose exactly."""
    gen = torch.Generator().manual_seed(0)
    spectrum = torch.fft.rfft2(torch.randn(n, h, w, generator=gen))
    if h % 2 == 0:
        spectrum[:, h // 2, :] = 0
    if w % 2 == 0:
        spectrum[:, :, w // 2] = 0
    return torch.fft.irfft2(spectrum, s=(h, w))


def _apply(images: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    return torch.fft.irfft2(torch.fft.rfft2(images) * transfer, s=images.shape[-2:])


@pytest.mark.parametrize("shape", [(48, 48), (45, 45)])
def test_phase_flip(shape):
    params = CTFParams(torch.tensor([9000.0, 16000.0]), torch.tensor([8000.0, 14000.0]), 30.0)
    images = _test_images(2, *shape)
    ctf = ctf_2d(params, shape, 1.5)
    observed = _apply(images, ctf)
    flipped = phase_flip(observed, params, 1.5)
    assert flipped.shape == images.shape and flipped.dtype == torch.float32
    # after flipping, the effective transfer function is |CTF| >= 0
    torch.testing.assert_close(flipped, _apply(images, ctf.abs()), atol=1e-5, rtol=0)
    # flipping twice is the identity (sign² = 1); numpy input accepted
    torch.testing.assert_close(phase_flip(flipped.numpy(), params, 1.5), observed, atol=1e-5, rtol=0)
    # broadcasting: one CTF over a (3, 2, h, w) stack
    stack = images.expand(3, 2, *shape)
    assert phase_flip(stack, params[0], 1.5).shape == (3, 2, *shape)


def test_wiener_filter():
    shape = (40, 40)
    params = CTFParams(torch.tensor([10000.0, 20000.0]), torch.tensor([9000.0, 18000.0]), 60.0)
    images = _test_images(2, *shape)
    ctf = ctf_2d(params, shape, 1.2).double()
    observed = _apply(images.double(), ctf).float()
    k_const = 0.05
    out = wiener_filter(observed, params, 1.2, wiener_constant=k_const)
    expected = _apply(images.double(), ctf**2 / (ctf**2 + k_const)).float()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(wiener_filter(observed, params, 1.2, snr=1 / k_const), out, atol=1e-6, rtol=0)
    # noise-free with a tiny constant: the image comes back wherever the CTF is not ~0
    restored = wiener_filter(observed, params, 1.2, wiener_constant=1e-8)
    keep = (ctf.abs() > 1e-2).float()
    torch.testing.assert_close(_apply(restored, keep), _apply(images, keep), atol=1e-3, rtol=0)
    # a CTF without zeros (phase plate, small defocus, coarse pixels) is inverted everywhere
    plate = CTFParams(500.0, 500.0, 0.0, phase_shift_deg=90.0, amplitude_contrast=0.0)
    blurred = _apply(images, ctf_2d(plate, shape, 4.0))
    torch.testing.assert_close(wiener_filter(blurred, plate, 4.0, wiener_constant=1e-9), images,
                               atol=1e-4, rtol=0)
    with pytest.raises(InputError):
        wiener_filter(observed, params, 1.2)
    with pytest.raises(InputError):
        wiener_filter(observed, params, 1.2, snr=1.0, wiener_constant=1.0)
    with pytest.raises(InputError):
        wiener_filter(observed, params, 1.2, wiener_constant=0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_same_results_on_every_device(device):
    params = CTFParams(torch.tensor([9000.0, 21000.0]), torch.tensor([8000.0, 17000.0]),
                       torch.tensor([-20.0, 75.0]), phase_shift_deg=10.0, bfactor_A2=60.0)
    images = _test_images(2, 33, 32)
    on_device = params.to(device)
    assert on_device.device.type == device
    ctf = ctf_2d(on_device, (33, 32), 1.3)
    assert ctf.device.type == device
    torch.testing.assert_close(ctf.cpu(), ctf_2d(params, (33, 32), 1.3), atol=1e-6, rtol=0)
    flipped = phase_flip(images.to(device), on_device, 1.3)
    torch.testing.assert_close(flipped.cpu(), phase_flip(images, params, 1.3), atol=1e-5, rtol=0)
    k = torch.linspace(0, 0.3, 16, device=device)
    assert ctf_1d(on_device, k).device.type == device
    assert spatial_coherence_envelope(k, 1e4, illumination_semiangle_mrad=0.05).device.type == device
