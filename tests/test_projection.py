"""Tests of cryolab.projection: analytic projections, invariants, adjointness, and RELION agreement.

External references (no RELION needed to run):
- ASPIRE-Python's RELION projections of the 70S ribosome (``../shared/data/relion/rln_proj_*``),
  even (64) and odd (65) boxes, with and without shifts;
- ``tests/data/projection_relion_reference.npz``: ``relion_project --ctf`` at random poses with
  sub-pixel origins and astigmatic CTFs (regenerate with ``tests/data/make_projection_reference.py``).

RELION 3.1.3 puts the projection of an odd box's centre voxel at pixel ``N//2 + 1`` (its
``CenterFFT(img, false)`` after the inverse FFT moves index 0 to ``(N+1)//2``); cryolab keeps it at
``N//2`` (docs/conventions.md). Odd-box RELION images are rolled by -1 pixel in x and y before
comparison, and ``test_relion_odd_box_is_one_pixel_off_centre`` pins that offset.
"""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from cryolab.ctf import CTFParams, ctf_2d
from cryolab.errors import InputError
from cryolab.fourier import crop_center, fftfreq_grid, fourier_crop, irfft_centered, rfft_centered, rfft_ifftshift
from cryolab.projection import (
    apply_shifts_rfft,
    band_limit,
    central_slices_to_images,
    extract_central_slices_rfft,
    gridding_correction,
    insert_central_slices_rfft,
    padded_size,
    prepare_volume_for_projection,
    project_fourier,
    project_real,
)
from cryolab.rotations import random_rotations, relion_euler_to_matrix

DATA = Path(__file__).resolve().parent / "data"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def correlation(a, b) -> np.ndarray:
    """Pearson correlation per image over the last two axes."""
    a = np.asarray(torch.as_tensor(a).detach().cpu(), dtype=np.float64)
    b = np.asarray(torch.as_tensor(b).detach().cpu(), dtype=np.float64)
    a = a - a.mean(axis=(-2, -1), keepdims=True)
    b = b - b.mean(axis=(-2, -1), keepdims=True)
    return (a * b).sum((-2, -1)) / np.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1)))


def rotations(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return random_rotations(n, generator=torch.Generator().manual_seed(seed)).to(dtype)


def centred_coordinates(n: int, dtype=torch.float64):
    """Voxel coordinates x, y, z (each (n, n, n), array order z, y, x) relative to the centre n//2."""
    axis = torch.arange(n, dtype=dtype) - n // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return x, y, z


def gaussian_volume(n: int, centre_xyz, sigma: float) -> torch.Tensor:
    x, y, z = centred_coordinates(n)
    cx, cy, cz = centre_xyz
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))


def blobs_volume(n: int, seed: int, count: int = 12) -> torch.Tensor:
    """A smooth random 'molecule': Gaussian blobs (sigma 1.5-3 px) inside radius n/4."""
    rng = np.random.default_rng(seed)
    volume = torch.zeros(n, n, n, dtype=torch.float64)
    for _ in range(count):
        centre = rng.uniform(-n / 4, n / 4, 3) / math.sqrt(3)
        volume += rng.uniform(0.5, 1.5) * gaussian_volume(n, centre, rng.uniform(1.5, 3.0))
    return volume.float()


def gaussian_projection(n: int, centre_xy, sigma: float) -> torch.Tensor:
    """Analytic ∫ exp(-|r - c|²/2σ²) dz = √(2π) σ exp(-|ρ - c_xy|²/2σ²) on the centred pixel grid."""
    axis = torch.arange(n, dtype=torch.float64) - n // 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    cx, cy = centre_xy
    return math.sqrt(2 * math.pi) * sigma * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


# --------------------------------------------------------------------------------------------
# Analytic projections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation, tolerance", [("linear", 1e-2), ("cubic", 2.5e-3)])
@pytest.mark.parametrize("n", [48, 49])
def test_gaussian_blob_projects_to_analytic_gaussian(n, interpolation, tolerance):
    """An off-centre Gaussian projects to √(2π)σ·Gaussian centred at (A c)_xy − origin (pins rotation,
    shift sign, normalisation and centring together). Measured peak errors at pad_factor 2:
    linear ≤ 0.8 %, cubic ≤ 0.15 % (module notes on accuracy)."""
    sigma, centre = 2.0, torch.tensor([5.0, -3.0, 7.0], dtype=torch.float64)
    volume = gaussian_volume(n, centre, sigma)
    mats = rotations(6, seed=n).double()
    pixel_size = 1.7
    origins_px = torch.tensor([[1.25, -2.5], [0, 0], [-3.3, 0.4], [0.5, 0.5], [2, 3], [-1, -1.75]], dtype=torch.float64)
    images = project_fourier(
        volume, mats, shifts_A=origins_px * pixel_size, pixel_size_A=pixel_size, interpolation=interpolation
    )
    assert images.shape == (6, n, n) and images.dtype == torch.float64
    for image, a, o in zip(images, mats, origins_px):
        expected = gaussian_projection(n, (a @ centre)[:2] - o, sigma)
        assert (image - expected).abs().max() < tolerance * expected.max()


def test_interpolation_error_falls_with_pad_factor():
    """Axis-aligned views read the table exactly on its nodes, where no blur undoes the gridding
    correction: the image is Σ_z V / gridding_correction. That error (3 % here for linear) falls as
    1/pad_factor², and the cubic kernel's correction is nearly flat."""
    n, sigma, centre = 48, 2.0, torch.tensor([5.0, -3.0, 7.0], dtype=torch.float64)
    volume = gaussian_volume(n, centre, sigma)
    identity = torch.eye(3, dtype=torch.float64)
    expected = gaussian_projection(n, centre[:2], sigma)
    error = {}
    for interpolation, pad_factor in [("linear", 2), ("linear", 4), ("cubic", 2)]:
        image = project_fourier(volume, identity, pad_factor=pad_factor, interpolation=interpolation)
        envelope = gridding_correction((n, n, n), padded_size(n, pad_factor), interpolation=interpolation)
        on_nodes = (volume / envelope).sum(0)
        # equal up to the band limit, which removes only the negligible corners of this smooth map
        assert torch.allclose(image, on_nodes, atol=1e-7 * on_nodes.max())
        error[interpolation, pad_factor] = float((image - expected).abs().max() / expected.max())
    assert 0.02 < error["linear", 2] < 0.04
    assert 3.5 < error["linear", 2] / error["linear", 4] < 4.5
    assert error["cubic", 2] < 2e-3


@pytest.mark.parametrize("n", [48, 49])
def test_nearest_interpolation_is_a_rougher_projector(n):
    centre = torch.tensor([3.0, 0.0, -4.0], dtype=torch.float64)
    volume = gaussian_volume(n, centre, 2.0)
    mats = rotations(3, seed=5).double()
    linear = project_fourier(volume, mats)
    nearest = project_fourier(volume, mats, interpolation="nearest")
    expected = torch.stack([gaussian_projection(n, (a @ centre)[:2], 2.0) for a in mats])
    assert correlation(nearest, expected).min() > 0.99
    assert (linear - expected).abs().max() < (nearest - expected).abs().max()


def ball_volume(n: int, radius: float, oversample: int = 4) -> torch.Tensor:
    """Uniform ball, anti-aliased: the fraction of each voxel inside (oversample³ sub-samples)."""
    sub = (torch.arange(oversample, dtype=torch.float64) + 0.5) / oversample - 0.5
    x, y, z = centred_coordinates(n)
    volume = torch.zeros(n, n, n, dtype=torch.float64)
    for dz in sub:
        for dy in sub:
            for dx in sub:
                volume += ((x + dx) ** 2 + (y + dy) ** 2 + (z + dz) ** 2 <= radius**2).double()
    return volume / oversample**3


def band_limited_ball_projection(n: int, radius: float, mats: torch.Tensor) -> torch.Tensor:
    """Analytic band-limited projection of the voxel-averaged ball: its 2D transform is the 3D one
    on the slice, F(k) = 4πR³ (sin q − q cos q)/q³ (q = 2πR|k|), times the voxel's sinc³ along the
    map axes (Aᵀk), within the band limit. Aliasing of the voxelised edge is ignored (~1e-3)."""
    k = fftfreq_grid((n, n), rfft=True).double()  # (n, n//2 + 1, 2) as (kx, ky)
    k_map = k[..., :1] * mats[:, None, None, 0, :] + k[..., 1:] * mats[:, None, None, 1, :]
    q = 2 * math.pi * radius * torch.linalg.vector_norm(k, dim=-1)
    q_safe = q.clamp(min=1e-3)
    ball = (torch.sin(q_safe) - q_safe * torch.cos(q_safe)) / q_safe**3
    ball = torch.where(q < 1e-3, torch.full_like(q, 1 / 3), ball)
    spectrum = 4 * math.pi * radius**3 * ball * torch.sinc(k_map).prod(-1)
    spectrum = spectrum * (torch.linalg.vector_norm(k, dim=-1) <= band_limit((n, n)) * (1 + 1e-6))
    return central_slices_to_images(spectrum.to(torch.complex128), (n, n))


@pytest.mark.parametrize("n", [48, 49])
def test_sphere_projects_to_chord_length(n):
    """A uniform ball of radius R projects to 2√(R² − r²) (up to the Gibbs ringing of its sharp
    edge), and to the analytic band-limited projection within interpolation error."""
    radius = 12.0
    volume = ball_volume(n, radius)
    mats = rotations(4, seed=1).double()
    axis = torch.arange(n, dtype=torch.float64) - n // 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    chord = 2 * torch.sqrt((radius**2 - xx**2 - yy**2).clamp(min=0))
    reference = band_limited_ball_projection(n, radius, mats)
    # measured: correlation with the band-limited reference 0.99987 (linear), 0.99997 (cubic),
    # 0.99983 (real space); with the chord itself 0.9987-0.9991. The mass (zero frequency, always
    # read on a table node) carries the on-node gridding error: +3.2 % linear, see
    # test_interpolation_error_falls_with_pad_factor.
    for images, bound, mass_rtol in [
        (project_fourier(volume, mats), 0.9998, 0.04),
        (project_fourier(volume, mats, interpolation="cubic"), 0.99995, 3e-3),
        (project_real(volume, mats), 0.9997, 3e-3),
    ]:
        assert correlation(images, reference).min() > bound
        assert correlation(images, chord.expand_as(images)).min() > 0.998
        centre = images[:, n // 2, n // 2]
        assert torch.allclose(centre, torch.full_like(centre, 2 * radius), rtol=0.02)
        assert torch.allclose(images.sum((-2, -1)), volume.sum().expand(4), rtol=mass_rtol)


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [32, 33])
def test_centred_voxel_stays_centred_in_every_projection(n, device):
    """A delta at N//2 has a flat transform: every view is the same centred, point-symmetric image."""
    volume = torch.zeros(n, n, n, device=device)
    volume[n // 2, n // 2, n // 2] = 1.0
    mats = rotations(20, seed=7).to(device)
    images = project_fourier(volume, mats).cpu()
    peak = torch.stack(torch.unravel_index(images.reshape(20, -1).argmax(-1), (n, n)), -1)
    assert (peak == n // 2).all()
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-5)
    # point symmetry about the centre pixel (index c + i <-> c - i)
    c = n // 2
    idx = (2 * c - torch.arange(n)) % n
    assert torch.allclose(images, images[:, idx][:, :, idx], atol=1e-5)
    assert images.sum(dim=(-2, -1)).sub(1).abs().max() < 1e-4  # the zero frequency is kept


@pytest.mark.parametrize("n", [32, 33])
def test_fourier_projector_agrees_with_real_space_projector(n):
    volume = blobs_volume(n, seed=n)
    mats = rotations(3, seed=11)
    pixel_size = 2.0
    shifts = torch.tensor([[0.0, 0.0], [1.5, -2.25], [-3.0, 0.7]]) * pixel_size
    fourier = project_fourier(volume, mats, shifts_A=shifts, pixel_size_A=pixel_size)
    real = project_real(volume, mats, shifts_A=shifts, pixel_size_A=pixel_size)
    assert correlation(fourier, real).min() > 0.999
    # trilinear rotate-and-sum blurs by at most sinc² per axis; at low frequency both are exact
    lowpass = (torch.fft.rfftfreq(n).abs()[None, :] ** 2 + torch.fft.fftfreq(n)[:, None] ** 2) <= 0.15**2
    f_low = irfft_centered(rfft_centered(fourier, 2) * lowpass, (n, n))
    r_low = irfft_centered(rfft_centered(real, 2) * lowpass, (n, n))
    assert correlation(f_low, r_low).min() > 0.9999


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "nearest"])
def test_extract_and_insert_are_adjoint(interpolation):
    """Re⟨extract(T), y⟩ = Re⟨T, insert(y)⟩ for arbitrary complex T and y (float64)."""
    n, pad_factor = 12, 2
    p = padded_size(n, pad_factor)
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(p, p, p // 2 + 1, dtype=torch.complex128, generator=gen)
    mats = rotations(4, seed=2, dtype=torch.float64)
    y = torch.randn(4, n, n // 2 + 1, dtype=torch.complex128, generator=gen)
    kwargs = dict(pad_factor=pad_factor, interpolation=interpolation)
    forward = extract_central_slices_rfft(table, mats, (n, n), interpolation=interpolation)
    data, weight = insert_central_slices_rfft(y, mats, (n, n, n), **kwargs)
    lhs = torch.sum(forward.conj() * y).real
    rhs = torch.sum(table.conj() * data).real
    assert data.shape == table.shape and weight.shape == table.shape
    assert torch.isclose(lhs, rhs, rtol=1e-10)
    # the weight grid is the insertion of ones; explicit weights go in the same way
    ones, _ = insert_central_slices_rfft(torch.ones_like(y), mats, (n, n, n), **kwargs)
    assert torch.allclose(weight, ones.real)
    w = torch.rand(4, n, n // 2 + 1, dtype=torch.float64, generator=gen)
    _, weight_w = insert_central_slices_rfft(y, mats, (n, n, n), weights=w, **kwargs)
    assert torch.allclose(weight_w, insert_central_slices_rfft(w, mats, (n, n, n), **kwargs)[0].real)


def _axis_aligned_rotations(dtype) -> torch.Tensor:
    """Views whose slice points fall exactly on table nodes and on the ±P/2 band edge (the taps
    that wrap around or read Friedel partners beyond kx = P/2)."""
    angles = torch.tensor([[0.0, 0.0, 0.0], [90.0, 90.0, 0.0], [0.0, 90.0, 90.0], [45.0, 90.0, 180.0]])
    return relion_euler_to_matrix(angles).to(dtype)


@pytest.fixture
def torch_projector(monkeypatch):
    """Run the projector on its torch path (the reference of the compiled CPU sweep)."""
    def use_torch(flag: bool):
        monkeypatch.setenv("CRYOLAB_NUMBA", "0" if flag else "1")
    return use_torch


@pytest.mark.parametrize("n, image_shape, dtype", [(16, (16, 16), torch.complex64), (17, (17, 17), torch.complex128),
                                                   (16, (12, 12), torch.complex128), (15, (15, 14), torch.complex64)])
def test_compiled_projector_matches_the_torch_path(torch_projector, n, image_shape, dtype):
    """The compiled table-order sweep (CPU, linear) reads the same values as the torch path:
    random views and axis-aligned ones (nodes, band edge, wrap-around, Friedel taps), two tables
    broadcast against a batch of poses, odd and even boxes, smaller and rectangular images."""
    pytest.importorskip("numba")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    p = padded_size(n, 2)
    gen = torch.Generator().manual_seed(n)
    tables = torch.randn(2, 1, p, p, p // 2 + 1, dtype=dtype, generator=gen)
    mats = torch.cat([rotations(9, seed=n, dtype=real), _axis_aligned_rotations(real)])  # (13, 3, 3)
    torch_projector(False)
    from cryolab.projection import _compiled_kernels_enabled

    assert _compiled_kernels_enabled()  # (the comparison below is not torch against itself)
    fast = extract_central_slices_rfft(tables, mats, image_shape)
    torch_projector(True)
    reference = extract_central_slices_rfft(tables, mats, image_shape)
    assert fast.shape == reference.shape == (2, 13, image_shape[0], image_shape[1] // 2 + 1)
    tolerance = 1e-13 if dtype == torch.complex128 else 1e-6
    assert float((fast - reference).abs().max()) < tolerance * float(reference.abs().max())


@pytest.mark.parametrize("n, dtype", [(16, torch.complex128), (17, torch.complex64)])
def test_compiled_insertion_matches_the_torch_path(torch_projector, n, dtype):
    """Insertion (the adjoint) on the compiled path: same data and weight grids, with and without
    per-pixel weights, the band edge and the Friedel/wrap-around folding included."""
    pytest.importorskip("numba")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    gen = torch.Generator().manual_seed(3)
    mats = torch.cat([rotations(7, seed=5, dtype=real), _axis_aligned_rotations(real)])
    y = torch.randn(11, n, n // 2 + 1, dtype=dtype, generator=gen)
    w = torch.rand(11, n, n // 2 + 1, dtype=real, generator=gen)
    results = {}
    for use_torch in (False, True):
        torch_projector(use_torch)
        results[use_torch] = (insert_central_slices_rfft(y, mats, (n, n, n)),
                              insert_central_slices_rfft(y, mats, (n, n, n), weights=w))
    tolerance = 1e-12 if dtype == torch.complex128 else 1e-5
    for fast, reference in zip(results[False], results[True]):
        for a, b in zip(fast, reference):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert float((a - b).abs().max()) < tolerance * float(b.abs().max())


def test_lookup_table_matches_the_padded_fft_recipe():
    """prepare_volume_for_projection (axis by axis, skipping the padding) equals the recipe of its
    docstring: gridding correction, centred zero padding, rfftn of the ifftshifted box, fftshift
    of kz and ky — for odd and even maps, batched, float64."""
    gen = torch.Generator().manual_seed(4)
    for n, pad_factor in [(12, 2), (13, 2), (15, 1.7)]:
        volume = torch.randn(2, n, n, n, dtype=torch.float64, generator=gen)
        p = padded_size(n, pad_factor)
        corrected = volume / gridding_correction((n, n, n), p)
        before = p // 2 - n // 2
        padded = torch.nn.functional.pad(corrected, (before, p - n - before) * 3)
        dims = (-3, -2, -1)
        expected = torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(padded, dim=dims), dim=dims), dim=(-3, -2))
        table = prepare_volume_for_projection(volume, pad_factor=pad_factor)
        assert table.shape == expected.shape and table.dtype == torch.complex128 and table.is_contiguous()
        assert float((table - expected).abs().max()) < 1e-12 * float(expected.abs().max())


def test_torch_path_sees_in_place_changes_of_a_table(torch_projector):
    """The torch path keeps the padded copy of recent tables; an in-place change must not be missed."""
    torch_projector(True)
    n = 12
    p = padded_size(n, 2)
    table = torch.randn(p, p, p // 2 + 1, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    mats = rotations(3, seed=4)
    before = extract_central_slices_rfft(table, mats, (n, n))
    table.mul_(2)
    after = extract_central_slices_rfft(table, mats, (n, n))
    assert torch.allclose(after, 2 * before, rtol=1e-5, atol=1e-6)


def test_lookup_table_does_not_depend_on_an_executor():
    """The table's transforms split in halves over an executor's threads: the same bits as on the
    calling thread alone (what makes cryolab simulate's output independent of its workers)."""
    import concurrent.futures

    volume = blobs_volume(17, seed=3)
    alone = prepare_volume_for_projection(volume)
    with concurrent.futures.ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        shared = prepare_volume_for_projection(volume, executor=pool)
    assert shared.is_contiguous() and torch.equal(alone, shared)


@pytest.mark.parametrize("use_torch", [False, True])
def test_extract_into_a_reused_buffer(torch_projector, use_torch):
    """``out=``: a buffer holding anything (a previous batch, here NaN) is overwritten entirely —
    the pixels beyond the band limit become zero — and returned; a wrong buffer is refused."""
    torch_projector(use_torch)
    n = 14
    p = padded_size(n, 2)
    table = torch.randn(p, p, p // 2 + 1, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    mats = torch.cat([rotations(5, seed=6), _axis_aligned_rotations(torch.float32)])
    expected = extract_central_slices_rfft(table, mats, (n, n))
    buffer = torch.full((9, n, n // 2 + 1), complex(float("nan"), float("nan")), dtype=torch.complex64)
    result = extract_central_slices_rfft(table, mats, (n, n), out=buffer)
    assert result is buffer
    assert torch.equal(result, expected)  # same sweep, same values, zeros included
    with pytest.raises(InputError):
        extract_central_slices_rfft(table, mats, (n, n), out=torch.zeros(9, n, n // 2 + 1, dtype=torch.complex128))
    with pytest.raises(InputError):
        extract_central_slices_rfft(table, mats, (n, n), out=buffer[:, :, :-1])


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_insert_keeps_every_weight(interpolation):
    """Each inserted pixel's unit weight lands in the grid, none lost at the band edge or kx = 0
    (the taps that fall outside the stored half-table are folded back onto their partners)."""
    n = 16
    mats = rotations(5, seed=12)
    slices = torch.ones(5, n, n // 2 + 1, dtype=torch.complex64)
    data, weight = insert_central_slices_rfft(slices, mats, (n, n, n), interpolation=interpolation)
    inside = torch.linalg.vector_norm(fftfreq_grid((n, n), rfft=True), dim=-1) <= band_limit((n, n)) * (1 + 1e-6)
    assert weight.sum().item() == pytest.approx(5 * inside.sum().item(), rel=1e-5)
    assert data.real.sum().item() == pytest.approx(5 * inside.sum().item(), rel=1e-5)


def test_table_layout_round_trip():
    """The lookup table is the centred rfft of the gridding-corrected, padded map (documented recipe)."""
    n, pad_factor = 21, 2
    volume = blobs_volume(n, seed=9)
    table = prepare_volume_for_projection(volume, pad_factor=pad_factor)
    p = padded_size(n, pad_factor)
    assert p == 42 and table.shape == (p, p, p // 2 + 1)
    padded = irfft_centered(rfft_ifftshift(table, 3), (p, p, p))
    back = crop_center(padded, (n, n, n)) * gridding_correction((n, n, n), p).to(padded.dtype)
    assert torch.allclose(back, volume, atol=1e-5 * volume.max())
    assert padded.abs().sum() - crop_center(padded, (n, n, n)).abs().sum() < 1e-4 * padded.abs().sum()


def test_shift_theorem_matches_shifting_the_volume():
    """Translating the map by d moves the projection by (A d)_xy, i.e. origin = −(A d)_xy."""
    n, pixel_size = 32, 1.3
    volume = blobs_volume(n, seed=5)
    mats = rotations(3, seed=8)
    d = (2, -3, 1)  # whole voxels (x, y, z), so the volume shift is exact (np.roll)
    moved = torch.roll(volume, shifts=(d[2], d[1], d[0]), dims=(0, 1, 2))
    origins_A = -(mats @ torch.tensor(d, dtype=torch.float32))[:, :2] * pixel_size
    # cubic: the moved map sits elsewhere in the box, so linear interpolation errors (~1 %) differ
    by_phase = project_fourier(volume, mats, shifts_A=origins_A, pixel_size_A=pixel_size, interpolation="cubic")
    by_volume = project_fourier(moved, mats, interpolation="cubic")
    assert (by_phase - by_volume).abs().max() < 3e-3 * by_volume.abs().max()
    linear = project_fourier(volume, mats, shifts_A=origins_A, pixel_size_A=pixel_size)
    assert correlation(linear, project_fourier(moved, mats)).min() > 0.9999
    # the real-space projector shifts exactly in real space
    real = project_real(volume, mats, shifts_A=origins_A, pixel_size_A=pixel_size)
    assert correlation(real, project_real(moved, mats)).min() > 0.9999


def test_apply_shifts_rfft_convention():
    """image(x) = P(x + origin): origin (+2, −1) px moves a centred delta to (c − 2, c + 1)."""
    n = 16
    image = torch.zeros(n, n)
    image[n // 2, n // 2] = 1
    moved = central_slices_to_images(
        apply_shifts_rfft(rfft_centered(image, 2), torch.tensor([2.0, -1.0]) * 0.8, 0.8), (n, n)
    )
    assert torch.allclose(moved, torch.roll(image, shifts=(1, -2), dims=(0, 1)), atol=1e-6)


def test_apply_shifts_rfft_is_the_full_phase_ramp():
    """The separable ramp (row factor times column factor) equals cryolab.fourier.phase_ramp_rfft,
    Nyquist convention included, for odd and even boxes and broadcast batches."""
    from cryolab.fourier import phase_ramp_rfft

    gen = torch.Generator().manual_seed(2)
    for n in (16, 17):
        images_ft = torch.randn(4, 3, n, n // 2 + 1, dtype=torch.complex64, generator=gen)
        shifts_A = torch.randn(3, 2, generator=gen) * 5
        expected = images_ft * phase_ramp_rfft(-shifts_A / 1.5, (n, n))
        assert torch.allclose(apply_shifts_rfft(images_ft, shifts_A, 1.5), expected, atol=1e-6)


def test_batches_broadcast():
    n = 20
    volumes = torch.stack([blobs_volume(n, seed=1), blobs_volume(n, seed=2)])
    mats = rotations(6, seed=4).reshape(3, 2, 3, 3)
    images = project_fourier(volumes, mats)  # volume batch (2,) with rotation batch (3, 2)
    assert images.shape == (3, 2, n, n)
    for i in range(3):
        for j in range(2):
            single = project_fourier(volumes[j], mats[i, j])
            assert torch.allclose(images[i, j], single, atol=1e-5 * single.abs().max())
    assert project_real(volumes, mats).shape == (3, 2, n, n)
    # one table, many poses
    table = prepare_volume_for_projection(volumes[0])
    assert extract_central_slices_rfft(table, mats, (n, n)).shape == (3, 2, n, n // 2 + 1)


def test_ctf_as_parameters_or_values():
    n, pixel_size = 32, 1.5
    volume = blobs_volume(n, seed=6)
    mats = rotations(3, seed=6)
    params = CTFParams(defocus_u_A=torch.tensor([9000.0, 12000.0, 15000.0]), defocus_v_A=8000.0, defocus_angle_deg=30.0)
    from_params = project_fourier(volume, mats, ctf=params, pixel_size_A=pixel_size)
    values = ctf_2d(params, (n, n), pixel_size, rfft=True)
    from_values = project_fourier(volume, mats, ctf=values)
    assert torch.allclose(from_params, from_values, atol=1e-6 * from_values.abs().max())
    plain = project_fourier(volume, mats)
    assert torch.allclose(project_fourier(volume, mats, ctf=torch.ones(n, n // 2 + 1)), plain)


def test_band_limit():
    assert band_limit((64, 64)) == 0.5
    assert band_limit((65, 65)) == 32 / 65


def test_bad_input_raises():
    with pytest.raises(InputError):
        project_fourier(torch.zeros(8, 8, 9), torch.eye(3))
    with pytest.raises(InputError):
        project_fourier(torch.zeros(8, 8, 8), torch.eye(3), shifts_A=[1.0, 0.0])
    with pytest.raises(InputError):
        project_fourier(torch.zeros(8, 8, 8), torch.eye(2))
    with pytest.raises(InputError):
        project_fourier(torch.zeros(8, 8, 8), torch.eye(3), interpolation="bicubic")
    with pytest.raises(InputError):
        extract_central_slices_rfft(torch.zeros(16, 16, 8, dtype=torch.complex64), torch.eye(3), (8, 8))


# --------------------------------------------------------------------------------------------
# Agreement with RELION
# --------------------------------------------------------------------------------------------


def _read_star_particles(path: Path):
    star = starfile.read(path)
    return star["particles"] if isinstance(star, dict) else star


def _relion_to_cryolab_centre(images: np.ndarray) -> np.ndarray:
    """RELION 3.1.3 centres odd boxes at N//2 + 1; move them to cryolab's N//2."""
    n = images.shape[-1]
    return np.roll(images, (-1, -1), axis=(-2, -1)) if n % 2 else images


@pytest.fixture(scope="module")
def ribosome(shared_data) -> torch.Tensor:
    return torch.as_tensor(np.load(shared_data / "relion" / "clean70SRibosome_vol.npy"), dtype=torch.float64)


def _aspire_set(shared_data, ribosome, box: int, kind: str):
    stem = shared_data / "relion" / f"rln_proj_{box}_{kind}"
    particles = _read_star_particles(stem.with_suffix(".star"))
    # ASPIRE made the 64 set from the 65³ map by Fourier cropping (Volume.downsample), pixel size 1 Å
    volume = ribosome if box == 65 else fourier_crop(ribosome, box, ndim=3)
    angles = particles[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    # the shifted files carry RELION 3.0 pixel origins (rlnOriginX/Y); the pixel size is 1 Å
    columns = ["rlnOriginXAngst", "rlnOriginYAngst"] if "rlnOriginXAngst" in particles else ["rlnOriginX", "rlnOriginY"]
    origins = particles[columns].to_numpy()
    with mrcfile.open(stem.with_suffix(".mrcs")) as m:
        relion = np.asarray(m.data, dtype=np.float64)
    return volume, torch.as_tensor(angles), torch.as_tensor(origins), relion


@pytest.mark.parametrize("box", [64, 65])
@pytest.mark.parametrize("kind", ["centered", "shifted"])
def test_reproduces_aspire_relion_projections(shared_data, ribosome, box, kind):
    volume, angles, origins, relion = _aspire_set(shared_data, ribosome, box, kind)
    images = project_fourier(volume, relion_euler_to_matrix(angles), shifts_A=origins, pixel_size_A=1.0)
    relion = _relion_to_cryolab_centre(relion)
    # measured: > 0.999999 for all 16 images (relative error ~1e-3, mostly RELION zeroing its
    # 3D table beyond r_max, which dims the outermost shell)
    assert correlation(images, relion).min() > 0.99999
    scale = float((images.numpy() * relion).sum() / (images.numpy() ** 2).sum())
    assert abs(scale - 1) < 2e-3  # same normalisation: line integrals in voxel units


def test_relion_odd_box_is_one_pixel_off_centre(shared_data, ribosome):
    """RELION 3.1.3's odd-box projections sit one pixel further along +x and +y than N//2 says."""
    volume, angles, origins, relion = _aspire_set(shared_data, ribosome, 65, "centered")
    images = project_fourier(volume, relion_euler_to_matrix(angles)).numpy()
    best = max(
        ((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)),
        key=lambda s: correlation(np.roll(images, s, axis=(-2, -1)), relion).mean(),
    )
    assert best == (1, 1)


@pytest.fixture(scope="module")
def relion_ctf_reference():
    return np.load(DATA / "projection_relion_reference.npz")


@pytest.mark.parametrize("key", ["1ake_64", "ribosome_65"])
def test_matches_relion_project_with_shifts_and_ctf(shared_data, relion_ctf_reference, key):
    ref = relion_ctf_reference
    path = shared_data / "maps" / str(ref[f"map_{key}"])
    with mrcfile.open(path, permissive=True) as m:
        volume = torch.as_tensor(np.array(m.data, dtype=np.float32))
    columns = [str(c) for c in ref["ctf_columns"]]
    params = CTFParams.from_table({c: ref[f"ctf_{key}"][:, i] for i, c in enumerate(columns)})
    images = project_fourier(
        volume,
        relion_euler_to_matrix(ref[f"angles_deg_{key}"]),
        shifts_A=ref[f"origins_A_{key}"],
        pixel_size_A=float(ref[f"pixel_size_{key}"]),
        ctf=params,
    )
    relion = _relion_to_cryolab_centre(ref[f"images_{key}"].astype(np.float64))
    # measured: 1ake_64 >= 0.99998 (RELION's rfft CTF puts the even-box Nyquist row at +1/2),
    # ribosome_65 >= 0.999998
    assert correlation(images, relion).min() > 0.9999
