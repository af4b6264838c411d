"""Direct Fourier reconstruction: adjointness, round trips, half maps against the truth, map-reduce."""

import math

import numpy as np
import pytest
import torch

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.errors import InputError
from cryolab.fourier import pad_center, rfft_centered
from cryolab.projection import (apply_shifts_rfft, extract_central_slices_rfft, insert_central_slices_rfft,
                                padded_size, project_fourier)
from cryolab.reconstruct import (PartialReconstruction, backproject_chunk, filtered_backprojection, finalize,
                                 half_set_assignment, reconstruct_halves, regularised_division, ssnr_from_fsc)
from cryolab.rotations import random_rotations, relion_euler_to_matrix
from cryolab.simulate import ParticleParameters, sample_ctf_params, sample_shifts, simulate_images, uniform_poses
from cryolab.validate import fsc, fsc_resolution, fsc_to_truth_from_half

BOX, PIXEL_A = 32, 3.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: thread synchronisation costs more than it gains (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adk():
    """Coulomb potential of adenylate kinase (4AKE) in a 32³ box at 3 Å/px."""
    return atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL_A)


def particles(n: int, seed: int, *, views=None) -> ParticleParameters:
    g = torch.Generator().manual_seed(seed)
    euler = uniform_poses(n, generator=g) if views is None else views
    return ParticleParameters(euler, sample_shifts(n, max_A=2 * PIXEL_A, generator=g),
                              sample_ctf_params(n, defocus_min_A=5000, defocus_max_A=15000, astigmatism_max_A=500,
                                                generator=g))


def backproject(images, p: ParticleParameters, **kwargs) -> PartialReconstruction:
    return backproject_chunk(images, relion_euler_to_matrix(p.euler_deg), p.shifts_A, p.ctf, pixel_size_A=PIXEL_A,
                             **kwargs)


def band_limited(volume) -> torch.Tensor:
    """The map without the frequencies beyond (N//2)/N cycles/voxel, which no projection carries."""
    from cryolab.fourier import fftfreq_magnitude, irfft_centered

    keep = fftfreq_magnitude(volume.shape, rfft=True) <= 0.5
    return irfft_centered(rfft_centered(volume, 3) * keep, volume.shape)


def two_thirds_nyquist(curve) -> torch.Tensor:
    return curve[: int(round(2 / 3 * (BOX // 2))) + 1]


# --------------------------------------------------------------------------------------------
# The map step: the adjoint of the projector


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_backprojection_equals_the_projectors_adjoint_insertion(n, interpolation, monkeypatch):
    """backproject_chunk = insert_central_slices_rfft(CTF·shift·F[image], A R, weights=CTF²) summed over R."""
    import cryolab.reconstruct.backproject as bp

    monkeypatch.setattr(bp, "_POINTS_PER_BATCH", 300)  # several batches
    gen = torch.Generator().manual_seed(0)
    b = 7
    images = torch.randn(b, n, n, dtype=torch.float64, generator=gen)
    rot = random_rotations(b, generator=gen).double()
    rot[0] = torch.eye(3, dtype=torch.float64)  # band-edge samples on the grid planes
    ctf = torch.randn(b, n, n // 2 + 1, dtype=torch.float64, generator=gen)
    shifts = 3 * torch.randn(b, 2, generator=gen)
    spectra = apply_shifts_rfft(rfft_centered(images, 2), -shifts, 1.5) * ctf
    from cryolab.reconstruct import symmetry_operators

    ref_data, ref_weight = 0, 0
    for r in symmetry_operators("D3", dtype=torch.float64):
        d, w = insert_central_slices_rfft(spectra, rot @ r, (n, n, n), weights=ctf**2, interpolation=interpolation)
        ref_data, ref_weight = ref_data + d, ref_weight + w
    data, weight = backproject_chunk(images, rot, shifts, ctf, pixel_size_A=1.5, interpolation=interpolation,
                                     symmetry="D3").folded()
    assert data.shape == ref_data.shape == (padded_size(n, 2),) * 2 + (padded_size(n, 2) // 2 + 1,)
    assert torch.allclose(data.to(ref_data.dtype), ref_data, atol=2e-6 * float(ref_data.abs().max()))
    assert torch.allclose(weight.double(), ref_weight, atol=2e-6 * float(ref_weight.abs().max()))


@pytest.mark.parametrize("n", [16, 17])
def test_compiled_and_torch_backprojection_agree(n, monkeypatch):
    """The compiled CPU kernel (fused shift, CTF and insertion, table-order sweep) and the torch
    path fill the same grids: CTF parameters and values, premultiplied images, symmetry copies,
    views whose slices lie on grid planes and band-edge samples that round below index 0."""
    import cryolab.reconstruct.backproject as bp

    pytest.importorskip("numba")
    gen = torch.Generator().manual_seed(n)
    b = 9
    images = torch.randn(b, n, n, generator=gen)
    axis_aligned = relion_euler_to_matrix(torch.tensor([[0.0, 0, 0], [90, 90, 0], [0, 90, 90], [45, 90, 180],
                                                        [30, 90, 0]]))
    rot = torch.cat([axis_aligned, random_rotations(b - 5, generator=gen)])
    p = particles(b, seed=n)
    values = torch.randn(1, n, n // 2 + 1, generator=gen)  # one CTF for all images
    cases = [dict(ctf=p.ctf), dict(ctf=p.ctf, ctf_premultiplied=True, symmetry="D2"), dict(ctf=values), dict(ctf=None)]
    for case in cases:
        grids = {}
        for flag in ("1", "0"):
            monkeypatch.setenv("CRYOLAB_NUMBA", flag)
            assert bp._compiled_path_enabled("linear", images) == (flag == "1")
            grids[flag] = backproject_chunk(images, rot, p.shifts_A, pixel_size_A=PIXEL_A, **case).folded()
        for fast, reference in zip(grids["1"], grids["0"]):
            assert float((fast - reference).abs().max()) < 2e-6 * float(reference.abs().max())


def test_adjoint_relation_with_the_projector():
    """Re⟨extract(T), CTF·shift·F[y]⟩ = Re⟨T, data grid of y⟩ for any table T and images y."""
    n = 20
    gen = torch.Generator().manual_seed(3)
    p = padded_size(n, 2)
    table = torch.randn(p, p, p // 2 + 1, dtype=torch.complex128, generator=gen)
    rot = random_rotations(5, generator=gen)
    images = torch.randn(5, n, n, generator=gen)
    ctf = torch.rand(5, n, n // 2 + 1, generator=gen)
    shifts = torch.randn(5, 2, generator=gen)
    y = apply_shifts_rfft(rfft_centered(images.double(), 2), -shifts, 2.0) * ctf.double()
    forward = extract_central_slices_rfft(table, rot.double(), (n, n))
    data, _ = backproject_chunk(images, rot, shifts, ctf, pixel_size_A=2.0).folded()
    lhs = torch.sum(forward.conj() * y).real
    rhs = torch.sum(table.conj() * data.to(torch.complex128)).real
    assert torch.isclose(lhs, rhs, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Round trips


def test_noise_free_round_trip_with_ctf_and_shifts(adk):
    """simulate (CTF on a padded canvas, shifts) → back-project → finalize gives the map back."""
    p = particles(1500, seed=1)
    clean, _ = simulate_images(adk, p, PIXEL_A)
    volume = finalize(backproject(clean, p))
    curve = fsc(volume, adk)
    assert two_thirds_nyquist(curve).min() > 0.99
    assert curve[: BOX // 2].min() > 0.98
    # same units as the map, in real space: against the map limited to the band the slices carry
    # (the sharp potential has much power in the corners of its transform); mean removed, as the
    # origin's neighbourhood of the padded grid is not sampled by the slices (a smooth offset)
    a, b = volume - volume.mean(), band_limited(adk) - adk.mean()
    assert float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())) > 0.99
    assert 0.97 < float((a * b).sum() / (b * b).sum()) < 1.03


@pytest.mark.parametrize("method,interpolation,threshold", [("relion", "linear", 0.99), ("wiener", "nearest", 0.97)])
def test_round_trip_other_methods(adk, method, interpolation, threshold):
    """RELION's iterative gridding weights, and nearest-neighbour insertion (cruder), also recover the map."""
    rot = random_rotations(1200, generator=torch.Generator().manual_seed(2))
    images = project_fourier(adk, rot)
    volume = finalize(backproject_chunk(images, rot, interpolation=interpolation), method=method)
    assert two_thirds_nyquist(fsc(volume, adk)).min() > threshold


def test_filtered_backprojection_recovers_the_map(adk):
    """Ramp-filtered back-projection of evenly spread CTF-free views: the map at the right scale."""
    rot = random_rotations(1500, generator=torch.Generator().manual_seed(4))
    images = project_fourier(adk, rot)
    volume = filtered_backprojection(images, rot)
    assert two_thirds_nyquist(fsc(volume, adk)).min() > 0.98
    truth = band_limited(adk) - adk.mean()

    def correlation(v):
        v = v - v.mean()
        return float((v * truth).sum() / torch.sqrt((v * v).sum() * (truth * truth).sum()))

    assert correlation(volume) > 0.98
    assert 0.9 < float(((volume - volume.mean()) * truth).sum() / (truth * truth).sum()) < 1.1
    # without the ramp the 1/|k| density of the slices blurs the map (an isotropic filter, to
    # which the FSC is blind but real space is not)
    from cryolab.reconstruct.finalize import _symmetrise_kx0, table_to_map

    data, _ = _symmetrise_kx0(*backproject_chunk(images, rot).folded())
    assert correlation(table_to_map(data, BOX)) < 0.9


# --------------------------------------------------------------------------------------------
# Half maps and regularisation


@pytest.fixture(scope="module")
def noisy_halves(adk):
    """2000 particles at SNR 0.05 (white noise over the box), back-projected per half set."""
    p = particles(2000, seed=5)
    clean, _ = simulate_images(adk, p, PIXEL_A)
    sigma = math.sqrt(float(clean.var()) / 0.05)
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    return [backproject(noisy[i::2], p.select(slice(i, None, 2))) for i in (0, 1)]


@pytest.mark.parametrize("regularisation", ["ssnr-from-halves", "wiener"])
def test_half_map_resolution_is_confirmed_by_the_truth(adk, noisy_halves, regularisation):
    """The half-map FSC at 0.143 and the full map's FSC against the truth at 0.5 agree (Rosenthal & Henderson)."""
    result = reconstruct_halves(*noisy_halves, pixel_size_A=PIXEL_A, regularisation=regularisation)
    truth = fsc(result.volume, adk)
    half = fsc_resolution(result.fsc, BOX, PIXEL_A, 0.143).interpolated_shell
    against_truth = fsc_resolution(truth, BOX, PIXEL_A, 0.5).interpolated_shell
    assert 6 < half < BOX // 2 - 1  # the test data really are resolution-limited
    assert abs(half - against_truth) < 1.0
    predicted = fsc_to_truth_from_half(result.fsc)
    assert (predicted - truth)[1 : BOX // 2].abs().max() < 0.12
    assert result.n_particles == (1000, 1000)


def test_fsc_regularisation_beats_a_tiny_constant(adk, noisy_halves):
    """With noise, the FSC-derived SSNR damps noisy shells: the map is closer to the truth."""
    regularised = reconstruct_halves(*noisy_halves, pixel_size_A=PIXEL_A).volume
    plain = finalize(noisy_halves[0] + noisy_halves[1], wiener_constant=1e-6)
    err = [float(((v - adk) ** 2).sum()) for v in (regularised, plain)]
    assert err[0] < 0.9 * err[1]


def test_ssnr_from_fsc_follows_relion():
    curve = torch.tensor([1.0, 0.5, 1 / 3, 0.0, -0.2])
    half = ssnr_from_fsc(curve)
    assert torch.allclose(half[1:3], torch.tensor([1.0, 0.5]), rtol=1e-5)
    assert math.isclose(float(half[0]), 0.999 / 0.001, rel_tol=1e-4)  # clipped at 0.999
    assert torch.allclose(half[3:], torch.full((2,), 0.001 / 0.999), rtol=1e-4)  # clipped at 0.001
    whole = ssnr_from_fsc(curve, whole_map=True)
    f = math.sqrt(2 * 0.5 / 1.5)  # sqrt(2F / (1 + F)) at F = 0.5
    assert math.isclose(float(whole[1]), f / (1 - f), rel_tol=1e-4)
    assert torch.allclose(ssnr_from_fsc(curve, tau2_fudge=4), 4 * half)


def test_regularised_division_limits():
    """Constant 0 is the plain ratio; a huge constant shrinks towards 0; nothing beyond the band."""
    rot = random_rotations(50, generator=torch.Generator().manual_seed(7))
    images = torch.randn(50, 16, 16)
    partial = backproject_chunk(images, rot)
    plain = regularised_division(partial, wiener_constant=0.0)
    data, weight = partial.folded()
    from cryolab.reconstruct.finalize import _padded_shells, _symmetrise_kx0

    data, weight = _symmetrise_kx0(data, weight)
    shells, inside = _padded_shells(partial.pad_size, 16, weight.device)
    ok = inside & (weight > 0)
    assert torch.allclose(plain[ok], data[ok] / weight[ok], rtol=1e-5)
    assert bool((plain[~inside] == 0).all())
    damped = regularised_division(partial, wiener_constant=1e6)
    assert float(damped.abs().max()) < 1e-3 * float(plain.abs().max())


def test_compiled_and_torch_finalization_agree(adk, monkeypatch):
    """Shell means, division and inverse transform: the compiled kernels and numpy's in-place FFTs
    give the torch path's map; the shell table is the direct formula's."""
    import sys

    finalize_module = sys.modules["cryolab.reconstruct.finalize"]
    from cryolab.projection import band_limit

    p = particles(300, seed=12)
    clean, _ = simulate_images(adk, p, PIXEL_A)
    partial = backproject(clean, p)
    ssnr = torch.linspace(50, 0.01, BOX // 2 + 1)
    fast = [finalize(partial, ssnr=ssnr), finalize(partial, wiener_constant=0.1)]
    monkeypatch.setenv("CRYOLAB_NUMBA", "0")
    monkeypatch.setattr(finalize_module, "_NUMPY_FFT_IN_PLACE", False)
    reference = [finalize(partial, ssnr=ssnr), finalize(partial, wiener_constant=0.1)]
    for a, b in zip(fast, reference):
        assert float((a - b).abs().max()) < 1e-5 * float(b.abs().max())
    for pad, box in ((34, 17), (48, 32)):
        shells, inside = finalize_module._padded_shells(pad, box, "cpu")
        k = torch.arange(pad, dtype=torch.float32) - pad // 2
        radius2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + torch.arange(pad // 2 + 1.0) ** 2
        expected_inside = radius2 <= (band_limit((box, box)) * pad) ** 2 * (1 + 2e-6)
        expected = torch.round(torch.sqrt(radius2) * (box / pad)).to(torch.int32)
        expected = expected.masked_fill(~expected_inside, box // 2 + 1)
        assert torch.equal(inside, expected_inside) and torch.equal(shells, expected)


def test_table_to_map_is_the_cropped_gridding_corrected_inverse_transform():
    from cryolab.fourier import crop_center, irfft_centered, rfft_fftshift, rfft_ifftshift
    from cryolab.projection import gridding_correction
    from cryolab.reconstruct import table_to_map

    for n in (16, 17):
        p = padded_size(n, 2)
        volume = torch.randn(n, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        table = rfft_fftshift(rfft_centered(pad_center(volume, p, ndim=3), 3), 3)  # the table layout
        expected = crop_center(irfft_centered(rfft_ifftshift(table, 3), (p, p, p)), n, ndim=3)
        expected = expected / gridding_correction((n, n, n), p)
        assert torch.allclose(table_to_map(table, n).double(), expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Map-reduce


def test_chunks_add_up_to_the_whole(adk):
    """Partials of chunks, added with + or accumulated with out=, equal the single-chunk result."""
    p = particles(300, seed=8)
    clean, _ = simulate_images(adk, p, PIXEL_A)
    whole = backproject(clean, p)
    pieces = [backproject(clean[i:i + 70], p.select(slice(i, i + 70))) for i in range(0, 300, 70)]
    added = pieces[0]
    for piece in pieces[1:]:
        added = added + piece
    accumulated = PartialReconstruction.zeros(BOX)
    for i in range(0, 300, 70):
        accumulated = backproject(clean[i:i + 70], p.select(slice(i, i + 70)), out=accumulated)
    for partial in (added, accumulated):
        assert partial.n_images == 300
        assert torch.allclose(partial.data, whole.data, atol=1e-5 * float(whole.data.abs().max()))
        assert torch.allclose(partial.weight, whole.weight, atol=1e-5 * float(whole.weight.max()))
    assert torch.allclose(finalize(added), finalize(whole), atol=1e-4 * float(adk.abs().max()))


def test_folding_is_in_place_and_accumulation_can_go_on():
    """folded() moves the margins onto the grid in place: the partial is unchanged as a table and
    keeps accumulating."""
    gen = torch.Generator().manual_seed(10)
    images, rot = torch.randn(40, 18, 18, generator=gen), random_rotations(40, generator=gen)
    whole = [t.clone() for t in backproject_chunk(images, rot).folded()]
    part = backproject_chunk(images[:25], rot[:25])
    first = [t.clone() for t in part.folded()]
    assert all(torch.equal(a, b) for a, b in zip(first, part.folded()))  # folding twice changes nothing
    part = backproject_chunk(images[25:], rot[25:], out=part)
    for a, b in zip(part.folded(), whole):
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()))


def test_partials_of_different_grids_do_not_add():
    with pytest.raises(InputError, match="cannot combine"):
        PartialReconstruction.zeros(16) + PartialReconstruction.zeros(18)
    with pytest.raises(InputError, match="cannot combine"):
        PartialReconstruction.zeros(16) + PartialReconstruction.zeros(16, interpolation="nearest")


def test_bad_inputs_raise():
    rot = random_rotations(3)
    with pytest.raises(InputError, match="square"):
        backproject_chunk(torch.zeros(3, 16, 18), rot)
    with pytest.raises(InputError, match="rotations"):
        backproject_chunk(torch.zeros(3, 16, 16), rot[:2])
    with pytest.raises(InputError, match="pixel_size_A"):
        backproject_chunk(torch.zeros(3, 16, 16), rot, torch.zeros(3, 2))
    with pytest.raises(InputError, match="interpolation"):
        backproject_chunk(torch.zeros(3, 16, 16), rot, interpolation="cubic")
    with pytest.raises(InputError, match="box"):
        backproject_chunk(torch.zeros(3, 16, 16), rot, out=PartialReconstruction.zeros(20))
    with pytest.raises(InputError, match="symmetry"):
        backproject_chunk(torch.zeros(3, 16, 16), rot, symmetry="C2v")
    with pytest.raises(InputError, match="both half sets"):
        reconstruct_halves(PartialReconstruction.zeros(16), PartialReconstruction.zeros(16), pixel_size_A=1.0)


def test_work_streams_cover_each_half_set_once():
    """Workers get contiguous blocks of one half set each, about equal in size, together every particle once."""
    from cryolab.reconstruct import default_workers
    from cryolab.reconstruct.driver import _streams

    assert 1 <= default_workers() <= 4
    halves = np.array([1, 2] * 50 + [1] * 30)
    for workers in (1, 2, 3, 5):
        streams = _streams(halves, workers)
        assert len(streams) == (2 if workers == 1 else workers)
        for h in (1, 2):  # the half's particles, in order, cut into blocks
            blocks = [block for half, block in streams if half == h]
            assert np.array_equal(np.concatenate(blocks), np.flatnonzero(halves == h))
        if workers > 1:
            sizes = [len(block) for _, block in streams]
            assert max(sizes) <= 2 * min(sizes)
    assert [h for h, _ in _streams(np.ones(10, dtype=np.int64), 3)] == [1, 1, 1]


def test_half_set_assignment():
    import pandas as pd

    assert half_set_assignment(pd.DataFrame({"a": range(5)})).tolist() == [1, 2, 1, 2, 1]
    assert half_set_assignment(pd.DataFrame({"rlnRandomSubset": [2, 2, 1]})).tolist() == [2, 2, 1]
    with pytest.raises(InputError, match="rlnRandomSubset"):
        half_set_assignment(pd.DataFrame({"rlnRandomSubset": [1, 3]}))

